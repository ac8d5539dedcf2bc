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
  analytics and ticketing read it from the topic. The event carries what a ticket needs
  and the conversation no longer has (its flows ended when it was handed over): the
  request's slots (``slots_json``) and a summary in words (``text``,
  :func:`request_summary`: why it was handed over, what the user had said, the slots),
  which the dialogue manager gives the bot as the slot ``handoff_summary``.

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
from typing import Any

from prometheus_client import Counter, Histogram

from agents.dialogue.state import DialogueState, StateFormatError
from agents.dialogue.turns import Kind, Turn
from streams.handoff import HandoffRecord, HandoffStore, TranscriptLine, handoff_event
from streams.keys import ConversationKeys

__all__ = ["CONVERSATIONS_STARTED", "EXPIRED_REASON", "HANDOFF_OUTCOMES", "HANDOFF_REQUESTS",
           "HANDOFF_WAIT", "SUMMARY_MAX_CHARS", "HandoffWrites", "count_turns", "expire_due",
           "request_summary"]

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


#: The ``reason`` of an ``expired`` event (the request's own reason is in its summary).
EXPIRED_REASON = "no agent claimed it in time"
#: The longest summary an ``expired`` event carries (a ticket's description: the reference
#: CRM takes 5,000 characters).
SUMMARY_MAX_CHARS = 2000
#: The user's messages a summary quotes at most (the latest).
_SUMMARY_MESSAGES = 5


def request_summary(record: HandoffRecord) -> str:
    """What a request nobody took was about, in words a support team reads on a ticket:
    why the bot handed over (``record.reason``: its flow and intent), what the user had
    said (their latest messages of the transcript, oldest first) and the slots collected.
    At most :data:`SUMMARY_MAX_CHARS` characters (the oldest quotes go first)."""
    head = f"Asked for a person ({record.reason or 'no reason given'}); nobody was free."
    slots = ", ".join(f"{k}: {_slot_text(v)}" for k, v in sorted(record.slots.items())
                      if v is not None and not str(k).startswith("parley_"))
    tail = f" Details given: {slots}." if slots else ""
    said = [" ".join(line.text.split()) for line in record.transcript
            if line.role == "user" and line.text.strip()][-_SUMMARY_MESSAGES:]
    while True:
        quoted = " The user said: " + " / ".join(f'"{t}"' for t in said) + "." if said else ""
        text = head + quoted + tail
        if len(text) <= SUMMARY_MAX_CHARS or not said:
            return text[:SUMMARY_MAX_CHARS]
        if len(said) == 1:  # one long message: shortened, marked as such
            room = max(0, len(said[0]) - (len(text) - SUMMARY_MAX_CHARS) - 1)
            said = [said[0][:room] + "…"]
            continue
        said = said[1:]


def _slot_text(value: Any) -> str:
    """A slot's value as a person reads it (an amount as ``50 EUR``)."""
    if isinstance(value, dict) and set(value) >= {"value", "currency"}:
        return f"{value['value']} {value['currency']}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


async def expire_due(store: HandoffStore, publish: Publish, now_ms: int | None = None) -> int:
    """Take the requests whose wait ran out out of their queues and publish an ``expired``
    event for each (the conversation agent then hands the conversation back to the bot,
    whose ``pattern_handoff_expired`` may open a ticket with what the event carries: the
    request's slots and :func:`request_summary`); returns how many. A request taken but
    not published (the broker failed) is logged: its conversation stays handed over until
    the user's session ends."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    expired = await store.expire_due(now_ms)
    events = []
    for tenant, record in expired:
        full = await _with_transcript(store, tenant, record)
        events.append((record.conversation_id, handoff_event(
            f"{record.request_id}.x", tenant, record.conversation_id, "expired",
            timestamp_ms=now_ms, request_id=record.request_id, user_id=record.user_id,
            channel=record.channel, reason=EXPIRED_REASON, text=request_summary(full),
            slots=record.slots)))
    if events:
        try:
            await publish(events)
        except Exception:
            logger.exception("handoff.expired.publish_failed count=%d", len(events))
            raise
        logger.info("handoff.expired count=%d", len(events))
    return len(events)


async def _with_transcript(store: HandoffStore, tenant: str,
                           record: HandoffRecord) -> HandoffRecord:
    """``record`` with its transcript (taken out of the queue, its record and transcript
    stay until the session TTL); without one when it cannot be read: the summary then
    names the reason and slots only, and the expiry is not held up."""
    try:
        found = await store.record(tenant, record.conversation_id, transcript=True)
    except Exception:  # a transcript is a nicety here; the expiry itself must go out
        logger.warning("handoff.expired.transcript_unreadable conversation=%s",
                       record.conversation_id, exc_info=True)
        return record
    if found is None or found.request_id != record.request_id:
        return record
    return found
