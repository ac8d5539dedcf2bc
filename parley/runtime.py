"""Running a long-lived async service in a process: uvloop, signals, clean stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import uvloop

__all__ = ["run_until_signalled"]


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
