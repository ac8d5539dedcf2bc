"""The business events agent: ``business.events`` → ``conversation.notices``.

A backend publishes what happened to a tenant's customer (an order shipped, a payment
failed: schemas/business_event.avsc, keyed ``tenant/customer``), with a Kafka client or
through the gateway's ``POST /events/{backend}`` (gateway/callbacks.py). This agent
finds the customer's open conversations in the customer index
(:class:`streams.proactive.CustomerIndex`: the dialogue step marks a conversation active
at each user message; the customer is the conversation's user id) and sends each one a
ConversationNotice, keyed by that conversation: the dialogue step, the conversation's
single writer, says ``utter_event_<type>`` there with the event's data, in the
conversation's order (agents/dialogue/proactive.py). A customer with no open conversation
gets it at their next visit: the index keeps it (bounded) in the same atomic script that
found no conversation, and the dialogue step takes it when the customer next writes.

Only that customer's conversations are told: the index is keyed by tenant and customer,
and the notices name the conversations found there. A type the tenant's bot has no
response for is said nowhere (counted as ``no_response`` by the dialogue step).

Delivery is at least once: a repeated event sends the same notice ids (``<event
id>.<conversation>``), which the dialogue step drops. An event that does not decode or
names no valid customer goes to ``business.events.dlq``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from faust.types import EventT
from prometheus_client import Counter

from kernel.errors import DecodeError
from streams.app import WorkerContext, produce, raw_topic
from streams.batching import process_batches
from streams.codecs import AvroCodec
from streams.keys import validate_id
from streams.proactive import CustomerIndex, notice_event
from streams.topics import BUSINESS_EVENTS, CONVERSATION_NOTICES

__all__ = ["BUSINESS_EVENTS_SEEN", "EventRouter", "pending_notice",
           "register_business_events_agent"]

logger = logging.getLogger(__name__)

BUSINESS_EVENTS_SEEN = Counter(
    "parley_business_events_total",
    "Business events: told to open conversations (delivered) or kept for the customer's "
    "next visit (kept).", ["outcome"])

_TYPE = re.compile(r"[a-z0-9_]{1,64}")


def pending_notice(event: dict[str, Any]) -> dict[str, Any]:
    """What a business event tells a conversation: ``utter_event_<type>`` with its data
    (``ValueError`` for a type that cannot name a response or an invalid customer)."""
    validate_id("tenant id", event["tenant_id"])
    validate_id("customer id", event["customer_id"])
    if not _TYPE.fullmatch(event["type"]):
        raise ValueError(f"event type {event['type'][:40]!r}: use 1-64 of a-z 0-9 _")
    return {"event_id": event["event_id"], "kind": "business_event",
            "response": f"utter_event_{event['type']}",
            "data": {**event["data"], "event_type": event["type"]}}


class EventRouter:
    """Business events → the notices for their customers' open conversations."""

    def __init__(self, index: CustomerIndex) -> None:
        self.index = index

    async def route(self, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """``(conversation id, ConversationNotice)`` for each open conversation of the
        event's customer; none (the event kept for the next visit) when there is none."""
        waiting = pending_notice(event)
        tenant, customer = event["tenant_id"], event["customer_id"]
        at = _epoch_ms(event["timestamp"])
        found = await self.index.route(tenant, customer, waiting, at)
        BUSINESS_EVENTS_SEEN.labels("delivered" if found else "kept").inc()
        return [(conversation, notice_event(
            f"{waiting['event_id']}.{conversation}", tenant, conversation,
            kind="business_event", response=waiting["response"], data=waiting["data"],
            user_id=customer, timestamp_ms=at)) for conversation in found]


def register_business_events_agent(ctx: WorkerContext) -> EventRouter:
    """The agent on ``business.events``; returns its router."""
    settings = ctx.settings
    events = raw_topic(ctx.app, settings.topic(BUSINESS_EVENTS))
    notices = raw_topic(ctx.app, settings.topic(CONVERSATION_NOTICES))
    router = EventRouter(CustomerIndex(ctx.store.redis, open_s=settings.session_ttl_s))
    process = functools.partial(_process, router=router, ctx=ctx,
                                codec=ctx.codec("business_event", events),
                                notice_codec=ctx.codec("conversation_notice", notices),
                                notices=notices)

    @ctx.app.agent(events, name=f"{settings.topic_prefix}business_events")
    async def business_events(stream: Any) -> None:  # a faust.Stream
        await process_batches(stream, settings.worker_batch_size, process, "business_events",
                              ctx.dead_letters.send)

    return router


async def _process(batch: Sequence[EventT], *, router: EventRouter, ctx: WorkerContext,
                   codec: AvroCodec, notice_codec: AvroCodec, notices: Any) -> None:
    out: list[tuple[bytes, bytes]] = []
    for event in batch:
        try:
            decoded = codec.decode(event.message.value)
            found = await router.route(decoded)
        except (DecodeError, ValueError, KeyError) as exc:
            await ctx.dead_letters.send(event, exc, "business_events")
            continue
        out += [(conversation.encode(), notice_codec.encode(notice))
                for conversation, notice in found]
    if out:
        await produce(notices, out)


def _epoch_ms(timestamp: datetime | int) -> int:
    if isinstance(timestamp, datetime):
        return int(timestamp.timestamp() * 1000)
    return int(timestamp)
