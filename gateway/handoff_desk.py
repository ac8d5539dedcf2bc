"""The agent console's API (no HTTP here): a tenant's handoff queue, and the commands a
person uses to take a conversation over from the bot.

The console page (later, on the gateway's API port with the auth lane's agent role) is
a thin layer over :class:`HandoffDesk` and :class:`HandoffFeed`. The gateway may not
import agents/, so the desk speaks to the conversation agent only through what both
share: the handoff state in Redis Cluster (streams/handoff.py) and ``handoff.events``.

Every command is checked in Redis, then published to ``handoff.events`` keyed by the
conversation, where the conversation agent applies it in the conversation's order
through its single-writer dialogue step (so the replies it makes keep their order):

- :meth:`HandoffDesk.claim` takes a waiting conversation atomically (two agents: one
  wins, the other gets :class:`HandoffRefused`); if the ``claimed`` event cannot be
  published the claim is undone;
- :meth:`~HandoffDesk.send`, :meth:`~HandoffDesk.note`, :meth:`~HandoffDesk.release`,
  :meth:`~HandoffDesk.close` are refused unless the calling agent holds the
  conversation; release and close end the hold atomically (checked again), after the
  command is on the broker. The conversation agent checks the holder once more when it
  applies the command, so a late command of an agent who let go changes nothing.

Tenant isolation: the caller passes the agent's tenant (from its verified credentials)
and every key and check is built from that tenant only, so an agent of tenant A never
sees nor acts on tenant B's conversations: for A, B's conversations do not exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Message
from redis.asyncio.cluster import RedisCluster

from kernel.errors import DecodeError, ParleyError
from kernel.settings import Settings
from streams.codecs import AvroCodec, codec_for
from streams.follow import TopicFollower
from streams.handoff import HandoffRecord, HandoffStore, TranscriptLine, handoff_event
from streams.keys import validate_id
from streams.security import KafkaCredentials, kafka_credentials, sasl_config
from streams.topics import HANDOFF_EVENTS

__all__ = ["DeskQueue", "HandoffDesk", "HandoffFeed", "HandoffRefused", "Publisher",
           "open_desk", "open_feed"]

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4000


class HandoffRefused(ParleyError):
    """A console command the desk refuses: ``code`` is ``not_waiting`` (a claim of a
    conversation nobody waits on, or that another agent took first), ``not_holder`` (the
    agent does not hold the conversation), ``invalid`` (bad text or slots) or
    ``unavailable`` (the broker did not take the command; nothing changed)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.code, self.reason = code, reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class Publisher(Protocol):
    """What publishes a command (gateway/bus.py's ``InboundProducer``)."""

    def send(self, topic: str, key: str, value: bytes) -> asyncio.Future[int]: ...


@dataclass(frozen=True, slots=True)
class DeskQueue:
    """A tenant's handoffs: those waiting (longest first) and those held by an agent."""

    waiting: tuple[HandoffRecord, ...]
    held: tuple[HandoffRecord, ...]


class HandoffDesk:
    """The console's commands for one gateway (any number of gateways may run one).

    ``topic``: the ``handoff.events`` topic's full name; ``codec``: the ``handoff_event``
    codec; ``clock``: seconds since the epoch (tests pass their own).
    """

    def __init__(self, store: HandoffStore, publisher: Publisher, topic: str,
                 codec: AvroCodec, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._publisher = publisher
        self._topic = topic
        self._codec = codec
        self._clock = clock

    async def queue(self, tenant_id: str, agent_id: str) -> DeskQueue:
        """The tenant's waiting and held conversations, with reason, slots, transcript."""
        _ids(tenant_id, agent_id)
        waiting = await self._store.waiting(tenant_id)
        held = await self._store.held(tenant_id)
        found: list[list[HandoffRecord]] = [[], []]
        for listed, conversations in zip(found, (waiting, held), strict=True):
            for conversation in conversations:
                record = await self._store.record(tenant_id, conversation, transcript=True)
                if record is None:  # expired with its session: nothing left to act on
                    await self._store.forget(tenant_id, conversation)
                else:
                    listed.append(record)
        return DeskQueue(tuple(found[0]), tuple(found[1]))

    async def record(self, tenant_id: str, conversation_id: str) -> HandoffRecord | None:
        """The tenant's handoff request for a conversation (no transcript), or None when
        this tenant has none: the console tells "unknown here" (404) from "taken" (409)."""
        validate_id("tenant id", tenant_id)
        validate_id("conversation id", conversation_id)
        return await self._store.record(tenant_id, conversation_id)

    async def claim(self, tenant_id: str, agent_id: str, conversation_id: str) -> HandoffRecord:
        """Take a waiting conversation; :class:`HandoffRefused` (``not_waiting``) when it
        is not waiting in this tenant's queue (another agent was first)."""
        _ids(tenant_id, agent_id, conversation_id)
        now = self._now_ms()
        claimed = await self._store.claim(tenant_id, conversation_id, agent_id, now)
        if claimed is None:
            raise HandoffRefused("not_waiting", f"conversation {conversation_id!r} is not "
                                 "waiting for an agent (taken, released or unknown)")
        record = claimed.record
        try:
            await self._publish(tenant_id, record, "claimed", agent_id)
        except HandoffRefused:
            await self._store.unclaim(tenant_id, record, agent_id, now + 60_000)
            raise
        return record

    async def send(self, tenant_id: str, agent_id: str, conversation_id: str,
                   text: str) -> None:
        """Say ``text`` to the user of a conversation this agent holds."""
        record = await self._held(tenant_id, agent_id, conversation_id)
        text = _text(text)
        event_id = await self._publish(tenant_id, record, "agent_message", agent_id, text=text)
        await self._store.append(tenant_id, conversation_id, [
            TranscriptLine(event_id, "agent", text, self._now_ms(), agent_id)])

    async def note(self, tenant_id: str, agent_id: str, conversation_id: str,
                   text: str) -> None:
        """Keep a note with a conversation this agent holds (for the next agent or bot)."""
        record = await self._held(tenant_id, agent_id, conversation_id)
        text = _text(text)
        event_id = await self._publish(tenant_id, record, "note", agent_id, text=text)
        await self._store.append(tenant_id, conversation_id, [
            TranscriptLine(event_id, "note", text, self._now_ms(), agent_id)])

    async def release(self, tenant_id: str, agent_id: str, conversation_id: str,
                      slots: Mapping[str, Any] | None = None) -> None:
        """Hand the conversation back to the bot, with ``slots`` the agent set."""
        if slots is not None and not isinstance(slots, Mapping):
            raise HandoffRefused("invalid", "slots must be a mapping of slot name to value")
        await self._let_go(tenant_id, agent_id, conversation_id, "released", slots or {})

    async def close(self, tenant_id: str, agent_id: str, conversation_id: str) -> None:
        """End the conversation's session (the user's next message starts a new one)."""
        await self._let_go(tenant_id, agent_id, conversation_id, "closed", {})

    # -- internals ----------------------------------------------------------------------

    async def _let_go(self, tenant_id: str, agent_id: str, conversation_id: str, kind: str,
                      slots: Mapping[str, Any]) -> None:
        record = await self._held(tenant_id, agent_id, conversation_id)
        await self._publish(tenant_id, record, kind, agent_id, slots=slots)
        if not await self._store.let_go(tenant_id, conversation_id, agent_id):
            # Let go meanwhile by a concurrent call of the same agent: the command is on
            # the broker, and the conversation agent applies it once.
            logger.info("handoff.desk.already_let_go conversation=%s", conversation_id)

    async def _held(self, tenant_id: str, agent_id: str, conversation_id: str) -> HandoffRecord:
        _ids(tenant_id, agent_id, conversation_id)
        if await self._store.holder(tenant_id, conversation_id) != agent_id:
            raise HandoffRefused("not_holder", f"agent {agent_id!r} does not hold "
                                 f"conversation {conversation_id!r}")
        record = await self._store.record(tenant_id, conversation_id)
        if record is None:
            raise HandoffRefused("not_holder", f"conversation {conversation_id!r} has no "
                                 "handoff request any more (its session expired)")
        return record

    async def _publish(self, tenant_id: str, record: HandoffRecord, kind: str, agent_id: str,
                       *, text: str = "", slots: Mapping[str, Any] | None = None) -> str:
        event_id = f"h-{uuid.uuid4().hex}"
        try:
            value = self._codec.encode(handoff_event(
                event_id, tenant_id, record.conversation_id, kind,
                timestamp_ms=self._now_ms(), request_id=record.request_id,
                user_id=record.user_id, agent_id=agent_id, text=text, slots=slots,
                channel=record.channel))
        except (TypeError, ValueError, ParleyError) as exc:
            raise HandoffRefused("invalid", f"cannot encode the command: {exc}") from exc
        try:
            await self._publisher.send(self._topic, record.conversation_id, value)
        except Exception as exc:  # DeliveryError, or the producer gone: nothing was done
            raise HandoffRefused("unavailable", f"the command was not published: {exc}") \
                from exc
        return event_id

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _ids(tenant_id: str, agent_id: str, conversation_id: str | None = None) -> None:
    validate_id("tenant id", tenant_id)
    validate_id("agent id", agent_id)
    if conversation_id is not None:
        validate_id("conversation id", conversation_id)


def _text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise HandoffRefused("invalid", "the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise HandoffRefused("invalid", f"the text is longer than {MAX_TEXT_CHARS} characters")
    return text


#: A subscriber's callback: gets each HandoffEvent (decoded) of its tenant, on the loop.
OnEvent = Callable[[dict[str, Any]], None]


class HandoffFeed:
    """Follows ``handoff.events`` from its end and hands each event to the callbacks
    subscribed for its tenant, on the event loop: the console's live view (a user's
    message to the agent holding the conversation is a ``user_message`` event; a new
    request, a claim, a release refresh the queue). Undecodable events are skipped and
    logged. Without a consumer group, like the reply follower: every gateway sees all."""

    def __init__(self, bootstrap: str, topic: str, codec: AvroCodec,
                 credentials: KafkaCredentials | None = None) -> None:
        self._codec = codec
        self._subscribers: dict[str, list[OnEvent]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._follower = TopicFollower(bootstrap, topic, self._hand_over, from_beginning=False,
                                       log_as="gateway.handoff_feed",
                                       config={"fetch.wait.max.ms": 50,
                                               **sasl_config(credentials)})
        #: Set once every partition is assigned (events after it are seen).
        self.assigned = self._follower.assigned

    def subscribe(self, tenant_id: str, on_event: OnEvent) -> Callable[[], None]:
        """Call ``on_event`` for each event of ``tenant_id``; returns the unsubscribe."""
        validate_id("tenant id", tenant_id)
        self._subscribers.setdefault(tenant_id, []).append(on_event)

        def unsubscribe() -> None:
            found = self._subscribers.get(tenant_id, [])
            if on_event in found:
                found.remove(on_event)

        return unsubscribe

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._follower.start()

    async def close(self) -> None:
        await self._follower.close()

    def _hand_over(self, records: list[Message]) -> None:
        values = [value for msg in records if (value := msg.value()) is not None]
        if values and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._dispatch, values)

    def _dispatch(self, values: list[bytes]) -> None:
        for value in values:
            try:
                event = self._codec.decode(value)
            except DecodeError as exc:
                logger.warning("gateway.handoff_feed.undecodable error=%s", exc)
                continue
            for on_event in list(self._subscribers.get(event["tenant_id"], ())):
                try:
                    on_event(event)
                except Exception:  # one subscriber's failure is not the others'
                    logger.exception("gateway.handoff_feed.subscriber_failed")


def open_desk(settings: Settings, redis: RedisCluster, publisher: Publisher) -> HandoffDesk:
    """The desk of a gateway: its Redis client and its producer (``InboundProducer``)."""
    topic = settings.topic(HANDOFF_EVENTS)
    return HandoffDesk(HandoffStore(redis, ttl_s=settings.session_ttl_s), publisher, topic,
                       codec_for("handoff_event", settings.schema_registry_url, topic))


def open_feed(settings: Settings) -> HandoffFeed:
    """The live feed of a gateway (``start()`` it on the loop that gets the events)."""
    topic = settings.topic(HANDOFF_EVENTS)
    return HandoffFeed(settings.kafka_bootstrap, topic,
                       codec_for("handoff_event", settings.schema_registry_url, topic),
                       kafka_credentials(settings))
