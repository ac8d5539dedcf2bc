"""Proactive messages, the dialogue step's side: who the customer's conversations are, what
waited for their next visit, and the metrics of what was said unasked.

A ConversationNotice (a backend's callback, a business event: streams/proactive.py)
reaches the conversation on ``conversation.notices`` and is decided like any event,
in the conversation's order, by the dialogue step (the single writer of its replies:
:meth:`agents.dialogue.manager.DialogueManager.notify`). This module does what follows
from a batch's recorded turns:

- each user message marks its conversation active in its customer's index
  (:class:`streams.proactive.CustomerIndex`; the customer is the conversation's user id),
  which the business events agent reads to find the customer's open conversations;
- the notices that waited for the customer (no conversation was open when their event
  came) are taken in the same atomic script and sent to this conversation, on
  ``conversation.notices``: they come back to the step and are said in order.

Taken and then produced: a worker that dies between the two loses what waited (it was
kept for a visit that had not happened; the event itself stays on ``business.events``).

Metrics: ``parley_notices_total{outcome}`` (``said``; ``no_response``: the bot has
no response for it, e.g. an event type it does not announce).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from agents.dialogue.turns import Kind, Turn
from streams.proactive import CustomerIndex, notice_event

__all__ = ["NOTICES", "Visits", "count_notices"]

logger = logging.getLogger(__name__)

NOTICES = Counter("parley_notices_total",
                  "Callbacks and business events decided in a conversation.", ["outcome"])

#: Index calls in flight at once (the cluster client raises instead of waiting when more
#: commands are in flight than its pool holds: /work/shared/FINDINGS.md).
_AT_ONCE = 32
_TOUCH_EVERY_S = 60.0  # how often one worker marks one conversation active, at most

#: Sends ConversationNotices: ``(conversation id, record)`` pairs, in order.
PublishNotices = Callable[[Sequence[tuple[str, dict[str, Any]]]], Awaitable[None]]


def count_notices(turns: Sequence[Turn], applied: Sequence[bool]) -> None:
    """Count the recorded notice turns, said or not."""
    for turn, ok in zip(turns, applied, strict=True):
        if ok and turn.kind is Kind.NOTICE:
            NOTICES.labels("said" if turn.reply else "no_response").inc()


class Visits:
    """Marks the conversations of a batch's user messages active in their customer's index
    and sends them what waited for the customer."""

    def __init__(self, index: CustomerIndex, publish: PublishNotices, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index, self.publish, self._clock = index, publish, clock
        # A conversation marked active moments ago is open for its customer (open for
        # index.open_s), so nothing can wait for that customer: marking it again at every
        # message would cost a Redis call per conversation per batch for nothing.
        self._again_after_s = min(_TOUCH_EVERY_S, index.open_s / 2)
        self._touched: dict[tuple[str, str, str], float] = {}

    async def __call__(self, turns: Sequence[Turn], applied: Sequence[bool],
                       messages: dict[str, dict[str, Any]]) -> None:
        """``messages``: the batch's user messages by event id (their user and channel)."""
        latest: dict[tuple[str, str, str], tuple[int, str]] = {}
        for turn, ok in zip(turns, applied, strict=True):
            msg = messages.get(turn.event_id)
            if not ok or turn.kind is not Kind.MESSAGE or msg is None or not msg["user_id"]:
                continue
            key = (turn.keys.tenant_id, msg["user_id"], turn.keys.conversation_id)
            latest[key] = (_epoch_ms(msg["timestamp"]), msg["channel"])
        now = self._clock()
        latest = {key: value for key, value in latest.items()
                  if now - self._touched.get(key, -math.inf) >= self._again_after_s}
        if not latest:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        found: list[list[dict[str, Any]]] = []
        pending = list(latest.items())
        for start in range(0, len(pending), _AT_ONCE):  # the cluster client's pool is bounded
            found += await asyncio.gather(*(
                self.index.touch(tenant, user, conversation, at)
                for (tenant, user, conversation), (at, _) in pending[start:start + _AT_ONCE]))
        self._touched.update(dict.fromkeys(latest, now))
        notices = [
            (conversation, notice_event(
                f"{waiting['event_id']}.{conversation}", tenant, conversation,
                kind=str(waiting["kind"]), response=str(waiting["response"]),
                data=waiting.get("data", {}), user_id=user, channel=channel))
            for ((tenant, user, conversation), (_, channel)), taken
            in zip(latest.items(), found, strict=True) for waiting in taken]
        if notices:
            logger.info("proactive.pending.delivered count=%d", len(notices))
            await self.publish(notices)


def _epoch_ms(timestamp: datetime | int) -> int:
    if isinstance(timestamp, datetime):
        return int(timestamp.timestamp() * 1000)
    return int(timestamp)
