"""Per-conversation sequence numbers for accepted messages, asked of Redis in batches.

Every message the gateway accepts needs the next number of its conversation's
counter (a Redis ``INCR``, so it stays monotonic across gateways and reconnects).
One round trip per message cost ≈ 90 µs of the gateway's CPU, most of it system
calls, and under load the concurrent calls ran out of the cluster client's
connections (``MaxConnectionsError``: messages refused as "unavailable").

So at most one request is at Redis at a time, and messages that arrive
meanwhile go together in the next (one Lua call per Redis primary,
streams/state.py). A quiet gateway asks for a message's number at once (no
batching delay at light load). A busy one (:class:`ArrivalRate`) holds what it
accepts for ``busy_linger_s`` and asks for all of it at once; the numbered
messages then reach the producer within the same few milliseconds and go to the
broker in one request too. Brokers pay per produce request, the embedded one per
batch it stores, and Redis per request, so fewer and fuller ones leave the cores
to the rest of the pipeline.

Each waiter gets its number in the order it asked, so two messages of one
conversation are numbered, and produced, in the order they came.

A message asked for with the client's id for it (:meth:`InboundSequences.number`)
is also checked against the ids the conversation's recent messages came with: a
resend (a client that lost the ack to a dropped connection sends again, maybe to
another gateway) gets the number and event id of its first try instead of a new one,
and is not published twice.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from streams.keys import ConversationKeys
from streams.state import ConversationStore, Numbered

__all__ = ["ArrivalRate", "InboundSequences"]


class ArrivalRate:
    """Whether messages arrive faster than ``busy_per_s``, judged over windows of
    ``window_s``: busy when the last window or the current one reached that rate."""

    def __init__(self, busy_per_s: float, window_s: float = 0.1) -> None:
        self._window = window_s
        self._busy_count = busy_per_s * window_s  # messages in one window
        self._started = -math.inf
        self._count = 0
        self._last = 0.0  # the last window's count, scaled to a window's length

    def busy(self, now: float) -> bool:
        """Count a message arriving at ``now`` (seconds, monotonic)."""
        elapsed = now - self._started
        if elapsed >= self._window:
            self._last = self._count * self._window / elapsed
            self._started, self._count = now, 0
        self._count += 1
        return max(self._last, self._count) >= self._busy_count


@dataclass(frozen=True, slots=True)
class _Waiter:
    keys: ConversationKeys
    message_id: str
    event_id: str
    future: asyncio.Future[Numbered]


class InboundSequences:
    """Sequence numbers, asked for together: at once when quiet, every ``busy_linger_s``
    while messages come faster than ``busy_rate`` a second (``busy_linger_s`` 0: never
    held)."""

    def __init__(self, store: ConversationStore, *, busy_linger_s: float = 0,
                 busy_rate: float = math.inf, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._busy_linger = busy_linger_s
        self._rate = ArrivalRate(busy_rate if busy_linger_s > 0 else math.inf)
        self._busy = False  # what the last arrival found
        self._waiting: list[_Waiter] = []
        self._release_at: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None

    async def next(self, keys: ConversationKeys) -> int:
        """The conversation's next number. Raises what the store raised for the Redis
        primary that serves the conversation: when one primary is down, only the messages
        of the conversations it serves fail, and the rest of the batch is numbered."""
        return (await self.number(keys, "", "")).seq

    async def number(self, keys: ConversationKeys, message_id: str,
                     event_id: str) -> Numbered:
        """:meth:`next` for a message the client calls ``message_id``, which gets
        ``event_id`` if it is new; a resend gets what its first try got
        (``first_event_id`` set)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Numbered] = loop.create_future()
        self._busy = self._rate.busy(loop.time())
        self._waiting.append(_Waiter(keys, message_id, event_id, future))
        if self._sending is None and self._release_at is None:
            self._ask_or_hold()
        return await future

    def _ask_or_hold(self) -> None:
        if self._busy:
            loop = asyncio.get_running_loop()
            self._release_at = loop.call_later(self._busy_linger, self._release)
        else:
            self._release()

    def _release(self) -> None:
        """Ask for the numbers of every message waiting now."""
        self._release_at = None
        self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        taken, self._waiting = self._waiting, []
        try:
            for start in range(0, len(taken), self._max_batch):
                await self._ask(taken[start:start + self._max_batch])
        except asyncio.CancelledError:  # the gateway closing: nobody is left to answer
            for waiter in (*taken, *self._waiting):
                waiter.future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sending = None
        if self._waiting:  # what came while Redis answered
            self._ask_or_hold()

    async def _ask(self, batch: list[_Waiter]) -> None:
        try:
            numbers = await self._store.number_messages_settled(
                [(w.keys, w.message_id, w.event_id) for w in batch])
        except Exception as exc:  # each caller handles it as it would its own call
            for waiter in batch:
                if not waiter.future.done():  # its message's socket may have gone
                    waiter.future.set_exception(exc)
            return
        for waiter, numbered in zip(batch, numbers, strict=True):
            if waiter.future.done():
                continue
            if isinstance(numbered, Exception):  # its primary failed; the others stand
                waiter.future.set_exception(numbered)
            else:
                waiter.future.set_result(numbered)

    async def close(self) -> None:
        """Ask for what is held at once, and wait until every number asked for is
        answered (bounded by the Redis client's timeouts)."""
        while True:
            if self._release_at is not None:
                self._release_at.cancel()
                self._release()
            if self._sending is None:
                return
            await asyncio.wait([self._sending])
