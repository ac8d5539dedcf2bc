"""Adaptive micro-batches from a Faust stream, and processing them to the end.

Events accumulate while the previous batch is being processed, and the next
batch is whatever accumulated (up to ``max_size``): one event at a time when
the load is light (no batching delay), large batches under load. Events are
acknowledged only after their batch was processed, so offsets are committed
after the work is done (at-least-once, like take_events).

Faust's stream iterator hands out one event per turn of the event loop (it
awaits ``asyncio.sleep(0)`` before each), so a batch read from it alone holds
only the events that came while the agent waited on I/O: with 20,000 events
queued, the NLU agent (NLU had an agent of its own then) took batches of 12 on
average (``parley bench worker``).
:class:`QueuedEvents` takes, after each event from the iterator, every event
already waiting on the stream's channel.

A batch that fails because Redis or the broker is unavailable is processed
again, with growing pauses, until it succeeds (``process_until_done``): the
agents' steps are idempotent, and a batch left half-done would otherwise hold
its events unanswered until the worker restarts.

A batch that fails for any other reason holds a poison event
(streams/dead_letters.py): its events are processed again one at a time, and
the one (or ones) that fail alone go to their dead-letter topic
(``process_or_dead_letter``). The good events of the batch are answered, the
stream moves on, and no exception leaves the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import ChannelT, EventT

from streams.dead_letters import is_unavailable
from streams.metrics import (
    AGENT_BATCH_POISONED,
    AGENT_BATCH_RETRIES,
    AGENT_BATCH_SECONDS,
    AGENT_BATCH_SIZE,
    AGENT_EVENT_AGE_SECONDS,
    AGENT_EVENTS,
)
from streams.state import REDIS_UNAVAILABLE

__all__ = ["DEPENDENCY_ERRORS", "DeadLetter", "QueuedEvents", "adaptive_batches",
           "process_batches", "process_or_dead_letter", "process_until_done"]

logger = logging.getLogger(__name__)

#: The exception classes whose failures may be a dependency's, not the batch's;
#: ``is_unavailable`` decides for each error (a record too large is the record's).
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, KafkaError,
                                                 ProducerSendError)

#: Sends an event to its dead-letter topic: ``(event, error, agent name)``.
DeadLetter = Callable[[EventT, BaseException, str], Awaitable[None]]


class QueuedEvents:
    """The events already waiting on a Faust stream's channel, taken in one go.

    Per event it does what Faust's stream iterator does before handing one out
    (faust-streaming 0.15, ``faust/_cython/streams.pyx``: ``_prepare_event``): an
    event read while flow is stopped or from an older consumer generation (a
    rebalance) is dropped, unacked, as the iterator drops it; the others' messages
    are tracked as unacked, so offsets are committed only once they are acked.
    Re-read that function when upgrading Faust.
    """

    def __init__(self, stream: Any) -> None:
        channel = stream.channel
        self._queue = channel.queue if isinstance(channel, ChannelT) else None
        app = stream.app
        self._app = app
        self._acking_topics = app.topics.acking_topics
        self._unacked = app.consumer._unacked_messages
        self._on_message_in = stream._on_message_in
        self._on_stream_event_in = stream._on_stream_event_in
        self._stream = stream

    def take(self, most: int) -> list[EventT]:
        """Up to ``most`` events, without waiting; stops before a queued error, which
        the stream's iterator raises on its next turn."""
        queue = self._queue
        taken: list[EventT] = []
        if queue is None:
            return taken
        app = self._app
        while len(taken) < most and not queue.empty() and not queue._errors:
            event = queue.get_nowait()
            if not isinstance(event, EventT):  # a channel of plain values: not ours
                raise TypeError(f"expected events on {self._stream}, got {type(event)}")
            message = event.message
            if (not app.flow_control.is_active()
                    or message.generation_id != app.consumer_generation_id):
                continue
            if message.topic in self._acking_topics and not message.tracked:
                message.tracked = True
                self._unacked.add(message)
                self._on_message_in(message.tp, message.offset, message)
            self._on_stream_event_in(message.tp, message.offset, self._stream, event)
            taken.append(event)
        return taken


async def adaptive_batches(stream: Any, max_size: int) -> AsyncIterator[list[Any]]:
    """Yield lists of events; each is acked after the consumer's loop body returns.

    Unlike ``take_events``, there is no fixed wait to fill a batch, and the stream
    keeps being read while a batch is processed (up to ``4 * max_size`` events).
    """
    stream.enable_acks = False
    pending: deque[Any] = deque()
    have = asyncio.Event()
    room = asyncio.Event()
    room.set()
    limit = 4 * max_size
    queued = QueuedEvents(stream)

    async def fill() -> None:
        async for event in stream.events():
            pending.append(event)
            pending.extend(queued.take(limit - len(pending)))
            have.set()
            if len(pending) >= limit:  # let Faust's flow control hold the fetcher
                room.clear()
                await room.wait()

    filler = asyncio.create_task(fill())
    try:
        while True:
            if not pending:
                waiter = asyncio.create_task(have.wait())
                await asyncio.wait({waiter, filler}, return_when=asyncio.FIRST_COMPLETED)
                if filler.done():
                    waiter.cancel()
                    filler.result()  # re-raise what stopped the stream
                    return
            batch = [pending.popleft() for _ in range(min(max_size, len(pending)))]
            if not pending:
                have.clear()
            room.set()
            yield batch
            for event in batch:
                await stream.ack(event)
    finally:
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filler


async def process_until_done(
    process: Callable[[], Awaitable[None]], what: str, *,
    first_pause_s: float = 0.1, max_pause_s: float = 5.0,
) -> None:  # fmt: skip
    """Run ``process`` until it returns, pausing (doubling, up to ``max_pause_s``) after
    each failure that says a dependency is unavailable (``is_unavailable``). Other
    exceptions propagate."""
    pause = first_pause_s
    failures = 0
    while True:
        try:
            await process()
        except DEPENDENCY_ERRORS as exc:
            if not is_unavailable(exc):
                raise
            failures += 1
            AGENT_BATCH_RETRIES.labels(what).inc()
            logger.warning("%s.batch.retrying attempt=%d pause_s=%.1f error=%r",
                           what, failures, pause, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, max_pause_s)
        else:
            if failures:
                logger.info("%s.batch.recovered attempts=%d", what, failures + 1)
            return


def _oldest_timestamp(events: list[Any]) -> float | None:
    """The earliest producer timestamp (Kafka CreateTime, seconds) of a batch's events;
    None when none has one (a producer may leave it unset: -1)."""
    return min((t for event in events if (t := event.message.timestamp) > 0), default=None)


async def process_or_dead_letter(events: list[Any],
                                 process: Callable[[list[Any]], Awaitable[None]], what: str,
                                 dead_letter: DeadLetter) -> None:
    """``process`` the batch ``events`` until it succeeds (``process_until_done``); if it
    fails for another reason, process its events again one at a time, in order, and send
    each that fails alone to ``dead_letter``. Raises nothing but cancellation.

    Going one by one, not bisecting: poison is rare, and a conversation's events must
    be processed in their order (an event after the poison one may depend on one
    before it). The steps are idempotent, so the good events' repeat is harmless.
    """
    try:
        await process_until_done(functools.partial(process, events), what)
        return
    except Exception as exc:  # not an unavailable dependency: those are retried above
        if len(events) == 1:
            await dead_letter(events[0], exc, what)
            return
        AGENT_BATCH_POISONED.labels(what).inc()
        logger.warning("%s.batch.poisoned size=%d error=%r: processing one event at a time",
                       what, len(events), exc)
    for event in events:
        try:
            await process_until_done(functools.partial(process, [event]), what)
        except Exception as exc:
            await dead_letter(event, exc, what)


async def process_batches(stream: Any, max_size: int,
                          process: Callable[[list[Any]], Awaitable[None]], what: str,
                          dead_letter: DeadLetter) -> None:
    """An agent's loop: ``process`` each adaptive batch of ``stream`` until it succeeds,
    dead-lettering the events it cannot process (``process_or_dead_letter``). ``what``
    names the agent in logs and metrics."""
    events_done = AGENT_EVENTS.labels(what)
    batch_size = AGENT_BATCH_SIZE.labels(what)
    batch_seconds = AGENT_BATCH_SECONDS.labels(what)
    event_age = AGENT_EVENT_AGE_SECONDS.labels(what)
    async for events in adaptive_batches(stream, max_size):
        if (oldest := _oldest_timestamp(events)) is not None:
            event_age.observe(max(0.0, time.time() - oldest))
        began = time.perf_counter()
        await process_or_dead_letter(events, process, what, dead_letter)
        batch_seconds.observe(time.perf_counter() - began)
        batch_size.observe(len(events))
        events_done.inc(len(events))
