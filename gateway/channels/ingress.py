"""Putting channel messages on ``chat.inbound``, and the Redis records channels share.

:class:`Ingress` takes a message through the path the WebSocket's take: the
conversation's next sequence number (gateway/sequences.py, batched with the
sockets' own), an event id from the gateway, the ``ChatMessage`` encoding, and the
gateway's idempotent producer (gateway/bus.py), keyed by conversation.

:class:`ChannelRecords` keeps, in the Redis Cluster every gateway shares:

* webhook deliveries already taken (``parley:channel:{channel}:seen:{id}``, SET NX
  with a TTL): Slack retries an event it thinks unanswered with the same
  ``event_id``, and any gateway may get the retry;
* replies already sent (``parley:channel:sent:{event_id}``): a reply re-read after a
  rebalance, or re-produced by a worker, is not sent twice;
* the choices last offered as a numbered list (``parley:{t:c}:choices``), so that
  "2" means the second choice (:func:`gateway.channels.base.pick_choice`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence

from redis.asyncio.cluster import RedisCluster

from gateway.admission import InFlight
from gateway.bus import InboundProducer
from gateway.channels.base import InboundMessage, chat_message
from gateway.channels.errors import Overloaded
from gateway.sequences import InboundSequences
from streams.codecs import AvroCodec
from streams.keys import ConversationKeys

__all__ = ["ChannelRecords", "Ingress"]

#: Slack retries after about 0, 1 and 5 minutes; an hour covers them with room.
SEEN_TTL_S = 3600
#: A reply read again after a day would be stale anyway.
SENT_TTL_S = 24 * 3600


class Ingress:
    """Numbers a channel message and hands it to the producer, within the gateway's
    admission limit (``in_flight``, shared with its sockets)."""

    def __init__(self, sequences: InboundSequences, producer: InboundProducer,
                 codec: AvroCodec, topic: str, next_event_id: Callable[[], str],
                 gateway_id: str, in_flight: InFlight) -> None:
        self.in_flight = in_flight
        self._sequences = sequences
        self._producer = producer
        self._codec = codec
        self._topic = topic
        self._next_event_id = next_event_id
        self._gateway_id = gateway_id

    async def publish(self, message: InboundMessage) -> tuple[str, asyncio.Future[int]]:
        """``(event id, delivery)``; the delivery resolves once the broker holds the event
        (or fails with :class:`~gateway.bus.DeliveryError`: then release it from
        ``in_flight``). Raises :class:`Overloaded` when the gateway has too many messages
        waiting for replies, and what Redis raised when no sequence number could be had."""
        event_id = self._next_event_id()
        if not self.in_flight.admit(event_id):
            raise Overloaded(message.channel, "too many messages waiting for replies")
        try:
            seq = await self._sequences.next(message.keys)
        except BaseException:
            self.in_flight.release(event_id)
            raise
        value = self._codec.encode(chat_message(message, event_id, seq, self._gateway_id,
                                                int(time.time() * 1000)))
        return event_id, self._producer.send(self._topic, message.keys.conversation_id, value)


class ChannelRecords:
    """What gateways must agree on about channel traffic, in Redis (see the module doc)."""

    def __init__(self, redis: RedisCluster, *, choices_ttl_s: int) -> None:
        self._redis = redis
        self._choices_ttl_s = choices_ttl_s

    async def first_delivery(self, channel: str, delivery_id: str) -> bool:
        """True the first time a webhook delivery is seen (by any gateway)."""
        taken = await self._redis.set(f"parley:channel:{channel}:seen:{delivery_id}", b"1",
                                      nx=True, ex=SEEN_TTL_S)
        return bool(taken)

    async def forget_delivery(self, channel: str, delivery_id: str) -> None:
        """Let a retry of a delivery that was not taken after all through."""
        await self._redis.delete(f"parley:channel:{channel}:seen:{delivery_id}")

    async def was_sent(self, reply_event_id: str) -> bool:
        return bool(await self._redis.exists(f"parley:channel:sent:{reply_event_id}"))

    async def mark_sent(self, reply_event_id: str) -> None:
        await self._redis.set(f"parley:channel:sent:{reply_event_id}", b"1", ex=SENT_TTL_S)

    async def offer(self, keys: ConversationKeys, choices: Sequence[str]) -> None:
        """Remember the choices just offered (none: forget the last ones)."""
        key = keys.choices
        if choices:
            await self._redis.set(key, json.dumps(list(choices)), ex=self._choices_ttl_s)
        else:
            await self._redis.delete(key)

    async def offered(self, keys: ConversationKeys) -> list[str]:
        raw = await self._redis.get(keys.choices)
        if raw is None:
            return []
        try:
            found = json.loads(raw)
        except ValueError:
            return []
        return [c for c in found if isinstance(c, str)] if isinstance(found, list) else []
