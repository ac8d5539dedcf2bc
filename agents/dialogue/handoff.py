"""Human handoff, the conversation agent's side: the queue, the transcript, the expiry
sweep and the metrics.

The dialogue manager decides (:meth:`agents.dialogue.manager.DialogueManager.command`);
this module does what follows from a batch's turns in Redis and on the bus:

- a turn that hands over puts its conversation in the tenant's waiting queue with the
  reason, the slots and the recent history as its transcript (streams/handoff.py), and
  its ``requested`` event goes to ``handoff.events``;
- a message relayed to the person holding the conversation is added to the transcript,
  and its ``user_message`` event goes to ``handoff.events`` (the console follows it);
- a request nobody claimed within the bot's ``handoff.timeout_minutes`` is taken out of
  the queue by :func:`expire_due` (any worker; the take is atomic), which publishes an
  ``expired`` event; the conversation agent applies it like a console command
  (``pattern_handoff_expired``, where a bot opens a ticket: the hook for ticketing), and
  analytics and ticketing read it from the topic.

Both writes are made before the turns are recorded, like the knowledge and action
requests: a crash repeats them (the queue entry is keyed by request id, transcript lines
by event id, and readers of the topic drop a repeated event id), never loses them.

Metrics (Prometheus): ``parley_handoff_requests_total``, ``parley_handoff_outcomes_total``
(claimed, released, closed, expired), ``parley_handoff_wait_seconds`` (request → claim)
and ``parley_conversations_started_total``: the escalation rate is requests over
conversations started.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter, Histogram

from agents.dialogue.state import DialogueState, StateFormatError
from agents.dialogue.turns import Kind, Turn
from streams.handoff import HandoffRecord, HandoffStore, TranscriptLine, handoff_event
from streams.keys import ConversationKeys

__all__ = ["CONVERSATIONS_STARTED", "HANDOFF_OUTCOMES", "HANDOFF_REQUESTS", "HANDOFF_WAIT",
           "HandoffWrites", "count_turns", "expire_due"]

logger = logging.getLogger(__name__)

HANDOFF_REQUESTS = Counter("parley_handoff_requests_total",
                           "Conversations handed over to a person.", ["tenant"])
HANDOFF_OUTCOMES = Counter(
    "parley_handoff_outcomes_total",
    "What became of handoffs: claimed, released, closed, expired.", ["tenant", "outcome"])
HANDOFF_WAIT = Histogram("parley_handoff_wait_seconds",
                         "How long a handoff request waited for a person to claim it.",
                         buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600))
CONVERSATIONS_STARTED = Counter("parley_conversations_started_total",
                                "Conversations whose first message the bot took.", ["tenant"])


def count_turns(turns: Sequence[Turn], applied: Sequence[bool]) -> None:
    """Count the handoff outcomes and the conversations started among recorded turns."""
    for turn, ok in zip(turns, applied, strict=True):
        if not ok:
            continue
        tenant = turn.keys.tenant_id
        if turn.session.turns == 1 and turn.kind is Kind.MESSAGE:
            CONVERSATIONS_STARTED.labels(tenant).inc()
        notice = turn.notice
        if notice is None or notice.type in ("user_message", "agent_message", "note"):
            continue
        if notice.type == "requested":
            HANDOFF_REQUESTS.labels(tenant).inc()
            continue
        HANDOFF_OUTCOMES.labels(tenant, notice.type).inc()
        if notice.type == "claimed":
            HANDOFF_WAIT.observe(notice.waited_ms / 1000)


class HandoffWrites:
    """The queue and transcript writes of a batch's turns (before they are recorded)."""

    def __init__(self, store: HandoffStore) -> None:
        self.store = store

    async def __call__(self, turns: Sequence[Turn]) -> None:
        for turn in turns:
            event = turn.handoff
            if event is None:
                continue
            keys = turn.keys
            if event["type"] == "requested":
                record = queue_entry(keys, event, turn.session.dialogue)
                timeout_s = turn.notice.timeout_s if turn.notice else 0
                await self.store.enqueue(keys.tenant_id, record,
                                         record.requested_ms + timeout_s * 1000)
            elif event["type"] == "user_message":
                await self.store.append(keys.tenant_id, keys.conversation_id, [
                    TranscriptLine(event["in_reply_to"], "user", event["text"],
                                   event["timestamp"])])


def queue_entry(keys: ConversationKeys, event: dict[str, object],
                dialogue: bytes) -> HandoffRecord:
    """A ``requested`` event as its queue entry: the transcript is the conversation's
    recent history and the notes earlier agents left, oldest first."""
    try:
        state = DialogueState.from_bytes(dialogue) if dialogue else DialogueState()
    except StateFormatError:
        state = DialogueState()
    at = int(str(event["timestamp"]))
    request = str(event["event_id"])
    entries = [(h.role, h.text) for h in state.history] + [("note", n) for n in state.notes]
    lines = tuple(TranscriptLine(f"{request}.{i}", role, text, at - len(entries) + i)
                  for i, (role, text) in enumerate(entries))
    try:
        loaded = json.loads(str(event["slots_json"]))
    except ValueError:
        loaded = {}
    slots = loaded if isinstance(loaded, dict) else {}
    return HandoffRecord(keys.conversation_id, str(event["request_id"]),
                         str(event["user_id"]), str(event["channel"]), str(event["reason"]),
                         slots, at, transcript=lines)


#: Publishes HandoffEvents: ``(conversation id, record)`` pairs, in order.
Publish = Callable[[Sequence[tuple[str, dict[str, object]]]], Awaitable[None]]


async def expire_due(store: HandoffStore, publish: Publish, now_ms: int | None = None) -> int:
    """Take the requests whose wait ran out out of their queues and publish an ``expired``
    event for each (the conversation agent then hands the conversation back to the bot);
    returns how many. A request taken but not published (the broker failed) is logged:
    its conversation stays handed over until the user's session ends."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    expired = await store.expire_due(now_ms)
    events = [(record.conversation_id, handoff_event(
        f"{record.request_id}.x", tenant, record.conversation_id, "expired",
        timestamp_ms=now_ms, request_id=record.request_id, user_id=record.user_id,
        channel=record.channel, reason="no agent claimed it in time"))
        for tenant, record in expired]
    if events:
        try:
            await publish(events)
        except Exception:
            logger.exception("handoff.expired.publish_failed count=%d", len(events))
            raise
        logger.info("handoff.expired count=%d", len(events))
    return len(events)
