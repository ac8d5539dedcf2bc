"""The NLU step: ``chat.inbound`` → ``chat.understood``.

It runs inside the conversation agent (agents/conversation.py), which hands it
each batch's inbound messages. It classifies them with one batched model call
(relative dates resolved against each message's own timestamp, so a late or
replayed event gets the same entities) and produces one ``ChatUnderstood`` per
message, keyed like its input so per-conversation order is kept; the agent
gives the same events to the dialogue step while the broker takes them (nothing
in Parley reads them back). An undecodable event, or one whose tenant or
conversation id cannot name a conversation (``streams.keys``), goes to
``chat.inbound.dlq`` with the error and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from faust.types import EventT

from agents.nlu.model import Understanding
from kernel.errors import DecodeError
from streams.app import WorkerContext, send
from streams.keys import ConversationKeys, InvalidIdError
from streams.topics import ENVELOPE_FIELDS

__all__ = ["NluStep", "Understander", "Understood", "understood_again", "understood_events",
           "understood_payload"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Understood:
    """What the NLU step made of a batch: each event's ChatUnderstood (None for an
    undecodable event), and the future of their delivery to ``chat.understood``."""

    events: list[dict[str, Any] | None]
    delivered: Awaitable[Any]


class Understander(Protocol):
    """What the agent needs of a model (agents.nlu.model.NLUModel provides it)."""

    version: str

    @property
    def has_transformer(self) -> bool: ...

    def understand_batch(
        self, texts: Sequence[str],
        reference_time: datetime | Sequence[datetime] | None = None,
    ) -> list[Any]: ...


class NluStep:
    """The NLU step of the conversation agent (agents/conversation.py).

    ``await step(events)`` decodes a batch's ``chat.inbound`` events (an undecodable
    one, or one with invalid ids, goes to ``chat.inbound.dlq``), classifies them with
    one batched model call and sends a ``ChatUnderstood`` per message. It returns
    :class:`Understood`: each event's ChatUnderstood (None for an undecodable or
    invalid one), and a future that completes
    once the broker holds them all. The caller awaits it before it acknowledges the
    events, and may do other work meanwhile (the dialogue step does not need the
    topic: it gets the events themselves).
    """

    def __init__(self, ctx: WorkerContext, models: Callable[[str, str], Understander]) -> None:
        """``models``: the model that understands a tenant's user's messages (the bot
        version the user is routed to: a canary's for the users in its percentage).

        It runs before the conversation's state is read, so it cannot know that a
        message falls inside a task begun on another version: the dialogue step
        understands such a message again with that version's model
        (:func:`understood_again`) and decides on that; the ChatUnderstood sent here
        keeps what the routed model said (its ``model_version`` names that model)."""
        self._ctx = ctx
        self._models = models
        self._inbound = ctx.codec("chat_message", ctx.inbound)
        self._understood = ctx.codec("chat_understood", ctx.understood)

    async def __call__(self, events: Sequence[EventT]) -> Understood:
        decoded: list[dict[str, Any] | None] = []
        for event in events:
            try:
                msg = self._inbound.decode(event.message.value)
                # Checked here, before it is understood: chat.understood gets only
                # events the dialogue step can key.
                ConversationKeys(msg["tenant_id"], msg["conversation_id"])
            except (DecodeError, InvalidIdError) as exc:
                await self._ctx.dead_letters.send(event, exc, "conversation")
                decoded.append(None)
            else:
                decoded.append(msg)
        messages = [(event, msg) for event, msg in zip(events, decoded, strict=True)
                    if msg is not None]
        if not messages:
            return Understood(decoded, asyncio.gather())
        # One batched model call per bot: a tenant's messages go to its own bot's model.
        by_model: dict[int, tuple[Understander, list[int]]] = {}
        for i, (_, msg) in enumerate(messages):
            model = self._models(msg["tenant_id"], msg["user_id"])
            by_model.setdefault(id(model), (model, []))[1].append(i)
        results: list[Understanding | None] = [None] * len(messages)
        for model, indices in by_model.values():
            for i, result in zip(indices, await _understand(
                    model, [messages[i][1] for i in indices]), strict=True):
                results[i] = result
        understood = understood_events([msg for _, msg in messages],
                                       [r for r in results if r is not None])
        encode = self._understood.encode
        delivered = await send(self._ctx.understood, [
            (event.message.key, encode(u))
            for (event, _), u in zip(messages, understood, strict=True)
        ])
        made = iter(understood)
        return Understood([None if msg is None else next(made) for msg in decoded], delivered)


async def _understand(model: Understander,
                      messages: Sequence[dict[str, Any]]) -> list[Understanding]:
    texts = [m["payload"]["text"] for m in messages]
    # "tomorrow" means the day after the user said it, so an event processed late
    # (a backlog, a replay, a restarted worker) gets the same entities as on time.
    sent = [m["timestamp"] for m in messages]
    if model.has_transformer:  # milliseconds for each message it consults
        return await asyncio.to_thread(model.understand_batch, texts, sent)
    # CPU-bound, and in batches well under a millisecond per message
    return model.understand_batch(texts, sent)


def understood_events(messages: Sequence[dict[str, Any]],
                      results: Sequence[Understanding]) -> list[dict[str, Any]]:
    """The ChatUnderstood for each ChatMessage, given what the model made of it.

    At debug level each is logged with its message's trace id (``nlu.message.understood``).
    """
    events = [{**{k: msg[k] for k in ENVELOPE_FIELDS},
               "payload": understood_payload(msg["payload"]["text"],
                                             msg["payload"]["client_msg_id"], u,
                                             msg["payload"].get("roles", ()))}
              for msg, u in zip(messages, results, strict=True)]
    if logger.isEnabledFor(logging.DEBUG):  # once per batch: nothing per message otherwise
        for event in events:
            payload = event["payload"]
            logger.debug("nlu.message.understood event_id=%s intent=%s confidence=%.3f oos=%s",
                         event["event_id"], payload["intent"], payload["confidence"],
                         payload["oos"], extra={"trace_id": event["trace_id"]})
    return events


def understood_again(model: Understander, msg: Mapping[str, Any]) -> dict[str, Any]:
    """``msg``, a ChatUnderstood, as ``model`` understands its text: the dialogue step's
    second opinion when the bot version a turn runs on is not the one whose model
    understood the message (a task begun before a canary arrived, was promoted or rolled
    back). Relative dates resolve against the message's own timestamp, as in the NLU step.

    It runs the model inline, on the caller's thread: only messages around a version
    switch come here, one at a time (a model with a transformer takes milliseconds)."""
    payload = msg["payload"]
    (u,) = model.understand_batch([payload["text"]], [_reference_time(msg["timestamp"])])
    return {**msg, "payload": {**payload, **understood_payload(
        payload["text"], payload["client_msg_id"], u, payload.get("roles", ()))}}


def _reference_time(timestamp: datetime | int) -> datetime:
    """An event's ``timestamp`` as the model takes it: Avro decodes timestamp-millis as an
    aware datetime; epoch milliseconds are taken as UTC."""
    if isinstance(timestamp, datetime):
        return timestamp
    return datetime.fromtimestamp(timestamp / 1000, UTC)


def understood_payload(text: str, client_msg_id: str, u: Understanding,
                       roles: Sequence[str] = ()) -> dict[str, Any]:
    """A ChatUnderstood's payload: the user's message, what the model made of it, and
    the sender's verified ``roles`` (the dialogue step shows a ``bot_tester`` its state:
    streams/turn_state.py)."""
    return {
        "text": text,
        "client_msg_id": client_msg_id,
        "intent": u.intent,
        "confidence": float(u.confidence),
        "oos": bool(u.oos),
        "ranking": [{"intent": i, "confidence": float(c)} for i, c in u.ranking],
        "entities": [
            {"entity": e.entity, "start": e.start, "end": e.end, "text": e.text,
             "value": e.value, "source": e.source}
            for e in u.entities
        ],
        "model_version": u.model_version,
        "roles": list(roles),
    }
