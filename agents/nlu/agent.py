"""The NLU agent: ``chat.inbound`` → ``chat.understood``.

Takes inbound messages in batches, classifies them with one batched model call
(relative dates resolved against each message's own timestamp, so a late or
replayed event gets the same entities), and emits one ``ChatUnderstood`` per
message, keyed like its input so
per-conversation order is kept. An undecodable event goes to
``chat.inbound.dlq`` with the error and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from faust.types import EventT

from parley.errors import DecodeError
from streams.app import WorkerContext, produce, send_to_dlq
from streams.batching import process_batches
from streams.topics import ENVELOPE_FIELDS

if TYPE_CHECKING:
    from agents.nlu.model import Understanding

__all__ = ["Understander", "register_nlu_agent", "understood_events", "understood_payload"]

logger = logging.getLogger(__name__)


class Understander(Protocol):
    """What the agent needs of a model (agents.nlu.model.NLUModel provides it)."""

    version: str

    @property
    def has_transformer(self) -> bool: ...

    def understand_batch(
        self, texts: Sequence[str],
        reference_time: datetime | Sequence[datetime] | None = None,
    ) -> list[Any]: ...


def register_nlu_agent(ctx: WorkerContext, model: Understander) -> None:
    inbound_codec = ctx.codec("chat_message", ctx.inbound)
    understood_codec = ctx.codec("chat_understood", ctx.understood)
    settings = ctx.settings

    @ctx.app.agent(ctx.inbound, name=f"{settings.topic_prefix}nlu")
    async def nlu(stream: Any) -> None:  # a faust.Stream
        await process_batches(stream, settings.worker_batch_size, _process, "nlu")

    async def _process(events: Sequence[EventT]) -> None:
        messages: list[tuple[EventT, dict[str, Any]]] = []
        for event in events:
            try:
                messages.append((event, inbound_codec.decode(event.message.value)))
            except DecodeError as exc:
                await send_to_dlq(ctx.inbound_dlq, event, exc)
        if not messages:
            return
        texts = [m["payload"]["text"] for _, m in messages]
        # "tomorrow" means the day after the user said it, so an event processed late
        # (a backlog, a replay, a restarted worker) gets the same entities as on time.
        sent = [m["timestamp"] for _, m in messages]
        if model.has_transformer:  # milliseconds for each message it consults
            results = await asyncio.to_thread(model.understand_batch, texts, sent)
        else:  # CPU-bound, and in batches well under a millisecond per message
            results = model.understand_batch(texts, sent)
        understood = understood_events([msg for _, msg in messages], results)
        await produce(ctx.understood, [
            (event.message.key, understood_codec.encode(u))
            for (event, _), u in zip(messages, understood, strict=True)
        ])


def understood_events(messages: Sequence[dict[str, Any]],
                      results: Sequence[Understanding]) -> list[dict[str, Any]]:
    """The ChatUnderstood for each ChatMessage, given what the model made of it.

    At debug level each is logged with its message's trace id (``nlu.message.understood``).
    """
    events = [{**{k: msg[k] for k in ENVELOPE_FIELDS},
               "payload": understood_payload(msg["payload"]["text"],
                                             msg["payload"]["client_msg_id"], u)}
              for msg, u in zip(messages, results, strict=True)]
    if logger.isEnabledFor(logging.DEBUG):  # once per batch: nothing per message otherwise
        for event in events:
            payload = event["payload"]
            logger.debug("nlu.message.understood event_id=%s intent=%s confidence=%.3f oos=%s",
                         event["event_id"], payload["intent"], payload["confidence"],
                         payload["oos"], extra={"trace_id": event["trace_id"]})
    return events


def understood_payload(text: str, client_msg_id: str, u: Understanding) -> dict[str, Any]:
    """A ChatUnderstood's payload: the user's message and what the model made of it."""
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
    }
