"""Running a long-lived async service in a process: uvloop, signals, clean stop, and
keeping the garbage collector off start-up objects where that helps."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable

import uvloop

__all__ = ["freeze_startup_objects", "run_until_signalled"]


def freeze_startup_objects() -> None:
    """Exempt everything allocated so far (libraries, models, clients) from collection.

    For a process whose population stays put after start-up, like a worker: a full
    collection there visits mostly start-up objects and took 20 to 65 ms (measured),
    a pause every message in flight waits through; with them frozen, about 4 ms. Not
    for a gateway: full collections are triggered by growth relative to what is not
    frozen, so while thousands of sessions connect they came far more often and,
    scanning the sessions, took up to 450 ms each (measured at 10,000 sessions).
    """
    gc.collect()
    gc.freeze()


def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Run ``start()``, wait for SIGINT/SIGTERM, then ``stop()``; on uvloop."""

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await start()
        try:
            await stopping.wait()
        finally:
            await stop()

    uvloop.run(main())
