"""Running a long-lived async service in a process: uvloop, signals, clean stop,
keeping the garbage collector off start-up objects where that helps, and timing
its pauses (``parley_gc_pause_seconds``)."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from prometheus_client import Histogram

__all__ = ["GC_PAUSE", "YOUNG_COLLECTION_EVERY", "collect_young_less_often",
           "freeze_startup_objects", "observe_gc_pauses", "run_until_signalled",
           "timing_collections"]

GC_PAUSE = Histogram(
    "parley_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by the oldest generation collected (2: full). "
    "Every coroutine of the process waits through them.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
_pauses = [GC_PAUSE.labels(str(generation)) for generation in range(3)]

GcCallback = Callable[[str, dict[str, Any]], None]


def timing_collections(on_pause: Callable[[int, float], None]) -> GcCallback:
    """A ``gc.callbacks`` entry that calls ``on_pause(generation, seconds)`` after every
    collection (generation: the oldest one collected, 2 for a full collection)."""
    started = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            on_pause(info["generation"], time.perf_counter() - started)

    return callback


_time_collection = timing_collections(lambda generation, s: _pauses[generation].observe(s))


def observe_gc_pauses() -> None:
    """Time every collection of this process into ``parley_gc_pause_seconds``."""
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


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


#: Container allocations (net of deallocations) between two young collections; CPython's
#: default is 700.
YOUNG_COLLECTION_EVERY = 50_000


def collect_young_less_often(every: int = YOUNG_COLLECTION_EVERY) -> None:
    """Let what a message allocates die before the collector looks at it.

    For a process handling thousands of messages a second, like a gateway or a worker.
    With CPython's default, a young collection came every few milliseconds and promoted
    everything alive at that moment: the objects of every message in flight. Promoted
    objects pile up into full collections, which scan every session: 15 to 30 ms pauses
    in a gateway at 2,000 msg/s, which every message in flight waits through. At
    50,000, young collections come a few times a second and find little alive; p99 at
    2,000 msg/s fell by a sixth to two fifths (docs/benchmarks.md). The older
    generations keep their thresholds.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(every, middle, old)


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
