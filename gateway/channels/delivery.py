"""Sending channel replies exactly once, however many gateways run.

The WebSocket's replies reach every gateway (gateway/bus.py ``ReplyFollower``): each
writes those whose socket it holds, and a socket drops a ``seq`` it already has. A
Slack post or an SMS has no socket to dedupe on: if every gateway sent it, the user
would get it once per gateway. So channel replies are read by a Kafka consumer
GROUP on ``chat.outbound`` (``PARLEY_CHANNEL_CONSUMER_GROUP``): the broker gives
each partition to one member, a conversation's replies are sent by one gateway in
order, and a gateway that stops hands its partitions to the others.

Offsets are committed after a batch is sent (at-least-once), and each sent reply
is marked in Redis (``ChannelRecords.mark_sent``): a batch read again after a
rebalance or a crash skips what was already sent, so a user gets each reply once.
A new group starts from the topic's beginning: nothing produced before the first
gateway joined is lost (sent markers and the filter on ``channel`` keep old
replies from being sent twice or to the wrong place).

confluent-kafka is a blocking client: one thread polls the group and waits while
the event loop sends the batch (the sends are async HTTP calls), then commits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Counter

from gateway.channels.errors import ChannelError, SendError
from kernel.errors import DecodeError
from streams.codecs import AvroCodec
from streams.handoff import RELAYED
from streams.security import bootstrap_config
from streams.state import REDIS_UNAVAILABLE

__all__ = ["ChannelDelivery", "ReplyDispatcher", "Sender", "SentLog"]

logger = logging.getLogger(__name__)

REPLIES_SENT = Counter(
    "parley_channel_replies_total",
    "Channel replies by outcome: sent, duplicate (already sent), failed.",
    ["channel", "outcome"],
)

#: Pauses before the second and third attempt of a send the API may take later.
RETRY_DELAYS_S = (0.5, 2.0)
#: Conversations sent to at once; one conversation's replies go one after another.
CONCURRENCY = 32


class Sender(Protocol):
    """Sends one reply to its channel; raises :class:`SendError`."""

    async def send(self, reply: Mapping[str, Any]) -> None: ...


class SentLog(Protocol):
    """Which replies were sent already (``ChannelRecords`` in Redis)."""

    async def was_sent(self, reply_event_id: str) -> bool: ...

    async def mark_sent(self, reply_event_id: str) -> None: ...


class ReplyDispatcher:
    """Sends the channel replies of a batch: each once, one conversation's in ``seq``
    order, conversations side by side; retries what may pass."""

    def __init__(self, codec: AvroCodec, senders: Mapping[str, Sender], sent: SentLog, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._codec = codec
        self._senders = dict(senders)
        self._records = sent
        self._sleep = sleep
        self._limit = asyncio.Semaphore(CONCURRENCY)

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._senders)

    async def deliver(self, values: list[bytes]) -> None:
        """Send the channel replies among ``values`` (raw ``BotReply`` records): one
        conversation's in order, conversations side by side."""
        by_conversation: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for value in values:
            try:
                reply = self._codec.decode(value)
            except DecodeError as exc:
                logger.warning("channels.delivery.undecodable error=%s", exc)
                continue
            if reply["payload"].get("response") == RELAYED:
                continue  # a receipt for the web page's accounting: nothing to post
            if reply["channel"] in self._senders:
                by_conversation[reply["tenant_id"], reply["conversation_id"]].append(reply)
        await asyncio.gather(*(self._send_in_order(replies)
                               for replies in by_conversation.values()),
                             return_exceptions=True)

    async def _send_in_order(self, replies: list[dict[str, Any]]) -> None:
        async with self._limit:
            for reply in sorted(replies, key=lambda r: int(r["seq"])):
                await self._send_once(reply)

    async def _send_once(self, reply: dict[str, Any]) -> None:
        channel, event_id = reply["channel"], reply["event_id"]
        try:
            if await self._records.was_sent(event_id):
                REPLIES_SENT.labels(channel, "duplicate").inc()
                return
        except REDIS_UNAVAILABLE as exc:  # sending twice beats not sending
            logger.warning("channels.reply.unchecked event_id=%s error=%r", event_id, exc)
        try:
            await self._send_with_retries(reply)
        except (ChannelError, ValueError) as exc:  # ValueError: an id no channel can use
            REPLIES_SENT.labels(channel, "failed").inc()
            logger.error("channels.reply.failed channel=%s conversation_id=%s event_id=%s "
                         "error=%s", channel, reply["conversation_id"][:140], event_id, exc)
            return
        except Exception:  # a bug: logged with its traceback; the other replies still go
            REPLIES_SENT.labels(channel, "failed").inc()
            logger.exception("channels.reply.failed channel=%s event_id=%s", channel, event_id)
            return
        REPLIES_SENT.labels(channel, "sent").inc()
        try:
            await self._records.mark_sent(event_id)
        except REDIS_UNAVAILABLE as exc:
            logger.warning("channels.reply.unmarked event_id=%s error=%r", event_id, exc)

    async def _send_with_retries(self, reply: dict[str, Any]) -> None:
        sender = self._senders[reply["channel"]]
        for delay in (*RETRY_DELAYS_S, None):
            try:
                await sender.send(reply)
                return
            except SendError as exc:
                if not exc.retryable or delay is None:
                    raise
                logger.info("channels.reply.retry event_id=%s error=%s", reply["event_id"], exc)
            await self._sleep(delay)


class ChannelDelivery:
    """Reads ``topic`` in consumer group ``group`` and hands the records to ``dispatcher``
    (a batch at a time; committed once it is sent)."""

    def __init__(self, bootstrap: str, topic: str, group: str, dispatcher: ReplyDispatcher,
                 *, batch_size: int = 100) -> None:
        self.topic = topic
        self._dispatcher = dispatcher
        self._batch_size = batch_size
        self._config: dict[str, Any] = {
            **bootstrap_config(bootstrap),  # authenticates as this process (streams/security.py)
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Joins in seconds instead of ~25 s (/work/shared/FINDINGS.md, Kafka); a batch
            # of sends with retries stays well within the poll interval.
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 120_000,
            "socket.keepalive.enable": True,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set once this member has been given partitions (perhaps none, with many members).
        self.assigned = threading.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="channel-delivery", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop reading (the batch in hand is finished and committed) and leave the group."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 15)
            self._thread = None

    # --- the thread ---------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("channels.delivery.assigned topic=%s partitions=%s", self.topic,
                    [p.partition for p in partitions])
        self.assigned.set()

    def _run(self) -> None:
        consumer = Consumer(self._config)  # made here: nothing connects before start()
        consumer.subscribe([self.topic], on_assign=self._on_assign)
        last_error = ""
        try:
            while not self._stopping.is_set():
                try:
                    messages = consumer.consume(self._batch_size, timeout=0.2)
                except KafkaException as exc:
                    logger.warning("channels.delivery.consume_error error=%s", exc)
                    continue
                values = []
                for msg in messages:
                    if (error := msg.error()) is not None:
                        # Once per kind of error, not every poll (a topic not created yet
                        # answers each one with the same error until it is).
                        if error.str() != last_error:
                            last_error = error.str()
                            logger.warning("channels.delivery.consume_error error=%s", error)
                    elif (value := msg.value()) is not None:
                        last_error = ""
                        values.append(value)
                if values and self._loop is not None and not self._loop.is_closed():
                    done = asyncio.run_coroutine_threadsafe(
                        self._dispatcher.deliver(values), self._loop)
                    try:
                        done.result()
                    except Exception:  # deliver() handles its own; never stop reading
                        logger.exception("channels.delivery.batch_failed")
                if messages:
                    try:
                        consumer.commit(asynchronous=False)
                    except KafkaException as exc:  # a rebalance took the partitions: the
                        # new owner reads them again and skips what is marked sent
                        logger.warning("channels.delivery.commit_failed error=%s", exc)
        finally:
            consumer.close()

