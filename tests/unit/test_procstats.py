"""The bench's process sampler: CPU over a window and over each half of it."""

from __future__ import annotations

import os
import threading
import time

from parley.bench.procstats import ProcessSampler


def _spin_for(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_halves_show_a_process_that_got_busier() -> None:
    sampler = ProcessSampler(interval=0.02)
    sampler.add("me", os.getpid())
    start = time.time() + 0.1
    sampler.set_window(start, start + 1.2)
    sampler.start()
    time.sleep(start + 0.6 - time.time())  # idle through the first half
    _spin_for(0.45)  # busy through most of the second
    time.sleep(max(0.0, start + 1.3 - time.time()))
    sampler.stop()
    me = sampler.report()["processes"]["me"]
    first, second = me["cpu_util_halves"]
    assert first < 0.2 and second > 0.5
    assert abs((first + second) / 2 - me["cpu_util"]) < 0.1


def test_an_open_window_has_no_halves() -> None:
    sampler = ProcessSampler(interval=0.02)
    sampler.add("me", os.getpid())
    sampler.set_window(time.time(), float("inf"))
    sampler.start()
    threading.Event().wait(0.1)
    sampler.stop()
    me = sampler.report()["processes"]["me"]
    assert me["cpu_util_halves"] is None and me["cpu_util"] is not None
