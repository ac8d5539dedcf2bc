"""Adaptive micro-batches from a Faust stream.

Events accumulate while the previous batch is being processed, and the next
batch is whatever accumulated (up to ``max_size``): one event at a time when
the load is light (no batching delay), large batches under load. Events are
acknowledged only after their batch was processed, so offsets are committed
after the work is done (at-least-once, like take_events).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["adaptive_batches"]


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

    async def fill() -> None:
        async for event in stream.events():
            pending.append(event)
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
