"""The knowledge agent: ``knowledge.requests`` → answer → ``emit_reply``.

* :func:`register_knowledge_agent` defines a Faust agent on the
  ``knowledge.requests`` topic (Avro ``KnowledgeRequest``) with
  ``concurrency=8``: eight actors take events from the same partitions, so a
  slow LLM call holds up one of them, not the other conversations. Faust
  commits only offsets below the lowest unacknowledged event, so delivery
  stays at-least-once; the reply layer behind ``emit_reply`` makes the effect
  idempotent by the request's ``event_id``. A reply (or dead letter) that
  cannot be delivered because Redis or the broker is unavailable is sent
  again, with growing pauses, until it is (``process_until_done``); the
  question is not answered twice. A request that cannot be decoded, names an
  invalid id, or fails for any other reason than an unavailable dependency
  goes to ``knowledge.requests.dlq`` (streams/dead_letters.py); no exception
  leaves the agent. A failure of the knowledge service itself (an LLM down)
  is answered with an apology instead, so the user is never left waiting.
* :class:`KbDocumentsFollower` (from :mod:`agents.knowledge.follower`) keeps the
  worker's index in step with ``kb.documents``; :func:`start_follower` wires
  it to a service so that changes retire cached answers.

The dialogue/reply layer is someone else's: it is reached only through the
``emit_reply(request_envelope, text, sources)`` callable passed in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from agents.knowledge.follower import KbDocumentsFollower
from agents.knowledge.service import KnowledgeService
from kernel.errors import DecodeError
from kernel.settings import Settings
from streams.app import DeadLetters, raw_topic
from streams.batching import process_until_done
from streams.codecs import codec_for
from streams.keys import InvalidIdError
from streams.metrics import AGENT_EVENTS
from streams.security import kafka_credentials, sasl_config
from streams.topics import KB_DOCUMENTS, KNOWLEDGE_REQUESTS

__all__ = [
    "UNAVAILABLE_TEXT",
    "EmitReply",
    "KbDocumentsFollower",
    "register_knowledge_agent",
    "start_follower",
]

logger = logging.getLogger(__name__)

UNAVAILABLE_TEXT = "Sorry, I cannot look that up right now. Please try again in a moment."

EmitReply = Callable[[dict[str, Any], str, list[str]], Awaitable[None]]


def start_follower(service: KnowledgeService, settings: Settings,
                   loop: asyncio.AbstractEventLoop) -> KbDocumentsFollower:
    """Start following ``kb.documents`` into ``service.kb``; changes bump cache generations."""

    def on_change(tenants: set[str]) -> None:
        for tenant in tenants:
            retired = asyncio.run_coroutine_threadsafe(service.documents_changed(tenant), loop)
            retired.add_done_callback(functools.partial(_log_if_failed, tenant))

    follower = KbDocumentsFollower(
        service.kb, bootstrap=settings.kafka_bootstrap, topic=settings.topic(KB_DOCUMENTS),
        registry_url=settings.schema_registry_url, on_change=on_change,
        config=sasl_config(kafka_credentials(settings)),
    )
    follower.start()
    return follower


def _log_if_failed(tenant: str, retired: concurrent.futures.Future[None]) -> None:
    if not retired.cancelled() and retired.exception() is not None:
        # Answers cached before the change are still served until they expire.
        logger.error("kb.cache.retire_failed tenant=%s", tenant, exc_info=retired.exception())


def register_knowledge_agent(app: faust.App, settings: Settings, service: KnowledgeService,
                             emit_reply: EmitReply, *, concurrency: int = 8) -> Any:
    """Define the knowledge agent on ``app``; returns the Faust agent."""
    topic_name = settings.topic(KNOWLEDGE_REQUESTS)
    requests = raw_topic(app, topic_name)
    dead_letters = DeadLetters(app)
    codec = codec_for("knowledge_request", settings.schema_registry_url, topic_name)

    async def reject(event: Any, error: Exception) -> None:
        await dead_letters.send(event, error, "knowledge")

    async def delivery_for(event: Any) -> Callable[[], Awaitable[None]]:
        """How to deliver the outcome of ``event``: its reply, or the event to the DLQ."""
        try:
            request = codec.decode(event.value)
        except DecodeError as exc:
            return functools.partial(reject, event, exc)
        payload = request["payload"]
        try:
            answer = await service.answer(
                request["tenant_id"], payload["question"],
                conversation_id=request["conversation_id"],
                filters=dict(payload.get("filters") or {}) or None,
            )
        except InvalidIdError as exc:
            return functools.partial(reject, event, exc)
        except Exception:
            # Never leave the user without a reply; the details stay in the log.
            logger.exception("kb.request.failed event_id=%s", request.get("event_id"))
            return functools.partial(emit_reply, request, UNAVAILABLE_TEXT, [])
        logger.info("kb.request.answered event_id=%s mode=%s cached=%s degraded=%s",
                    request["event_id"], answer.mode, answer.cached, answer.degraded)
        return functools.partial(emit_reply, request, answer.text, list(answer.sources))

    handled = AGENT_EVENTS.labels("knowledge")

    @app.agent(requests, name=f"{settings.topic_prefix}knowledge", concurrency=concurrency)
    async def knowledge(stream: Any) -> None:
        async for event in stream.events():
            try:
                # Answered once; delivered again, with growing pauses, while Redis or the
                # broker is unavailable (the reply layer is idempotent by event_id).
                await process_until_done(await delivery_for(event), "knowledge")
            except Exception as exc:  # not a dependency's (those are retried): poison
                await reject(event, exc)
            handled.inc()

    return knowledge
