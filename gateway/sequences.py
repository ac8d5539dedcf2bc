"""Per-conversation sequence numbers for accepted messages, asked of Redis in batches,
and the hold that lets a busy gateway ask for them (and check its rate limits) together.

Every message the gateway accepts needs the next number of its conversation's
counter (a Redis ``INCR``, so it stays monotonic across gateways and reconnects).
One round trip per message cost ≈ 90 µs of the gateway's CPU, most of it system
calls, and under load the concurrent calls ran out of the cluster client's
connections (``MaxConnectionsError``: messages refused as "unavailable").

So at most one request is at Redis at a time, and messages that arrive
meanwhile go together in the next (one Lua call per Redis primary,
streams/state.py). The rate limiter batches its checks the same way
(gateway/limits.py).

A busy gateway (:class:`ArrivalRate`) does more: :class:`BusyHold` holds what it
accepts for ``linger_s`` before anything else is done with it, then lets all
of it on at once. The held messages are checked against the rate limits in one
call, numbered in one more, and reach the producer within the same few
milliseconds, so they go to the broker in one request too. Brokers pay per
produce request, the embedded one per batch it stores, and Redis per request, so
fewer and fuller ones leave the cores to the rest of the pipeline. (The hold used
to sit in front of the numbers only; the rate limiter then made about 600 calls a
second at 2,000 msg/s, and the gateway and Redis spent 0.17 ms of CPU a message
on it: docs/benchmarks.md.) A quiet gateway holds nothing.

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

__all__ = ["ArrivalRate", "BusyHold", "InboundSequences"]


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


class BusyHold:
    """Holds each arrival for up to ``linger_s`` while arrivals come faster than
    ``busy_rate`` a second, then lets everything held go on in one loop turn
    (``linger_s`` 0: never holds)."""

    def __init__(self, linger_s: float = 0, busy_rate: float = math.inf) -> None:
        self._linger = linger_s
        self._rate = ArrivalRate(busy_rate if linger_s > 0 else math.inf)
        self._held: list[asyncio.Future[None]] = []
        self._release_at: asyncio.TimerHandle | None = None
        self._closed = False

    async def arrive(self) -> None:
        """Count an arrival; return at once when quiet, else at the next release."""
        loop = asyncio.get_running_loop()
        busy = self._rate.busy(loop.time())
        if self._closed or not (busy or self._held):
            return
        # A future of its own: a waiter cancelled (its socket gone) cancels only itself.
        future: asyncio.Future[None] = loop.create_future()
        self._held.append(future)
        if self._release_at is None:
            self._release_at = loop.call_later(self._linger, self._release)
        await future

    def _release(self) -> None:
        self._release_at = None
        held, self._held = self._held, []
        for future in held:
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Let what is held go on now, and hold nothing from now on."""
        self._closed = True
        if self._release_at is not None:
            self._release_at.cancel()
        self._release()


@dataclass(frozen=True, slots=True)
class _Waiter:
    keys: ConversationKeys
    message_id: str
    event_id: str
    future: asyncio.Future[Numbered]


class InboundSequences:
    """Sequence numbers, asked for together: one request at Redis at a time, and what
    is asked for meanwhile goes in the next."""

    def __init__(self, store: ConversationStore, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._waiting: list[_Waiter] = []
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
        future: asyncio.Future[Numbered] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiter(keys, message_id, event_id, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        taken: list[_Waiter] = []
        try:
            while self._waiting:  # what came while Redis answered goes in the next call
                taken, self._waiting = self._waiting, []
                for start in range(0, len(taken), self._max_batch):
                    await self._ask(taken[start:start + self._max_batch])
        except asyncio.CancelledError:  # the gateway closing: nobody is left to answer
            for waiter in (*taken, *self._waiting):
                waiter.future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sending = None

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
        """Wait until every number asked for is answered (bounded by the Redis client's
        timeouts)."""
        while self._sending is not None:
            await asyncio.wait([self._sending])
