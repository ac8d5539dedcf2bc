"""The bench's process sampler: CPU over a window and over each half of it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from benchmarks.procstats import ProcessSampler


def _spin_for(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.slow  # CPU-time assertions: a busy machine fails them
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


@pytest.mark.slow  # CPU-time assertions: a busy machine fails them
def test_the_timeline_follows_the_process_second_by_second() -> None:
    sampler = ProcessSampler(interval=0.02, point_interval=0.2)
    sampler.add("me", os.getpid())
    start = time.time() + 0.05
    sampler.set_window(start, start + 1.6)
    sampler.start()
    time.sleep(start + 0.8 - time.time())  # idle for the first half
    _spin_for(0.7)
    time.sleep(max(0.0, start + 1.7 - time.time()))
    sampler.stop()
    timeline = sampler.cpu_timeline()
    seconds, me = timeline["second"], timeline["me"]
    assert len(seconds) == len(me) >= 6
    assert seconds == sorted(seconds) and 0 < seconds[0] < seconds[-1] < 1.7
    early = [u for t, u in zip(seconds, me, strict=True) if t < 0.6]
    late = [u for t, u in zip(seconds, me, strict=True) if 0.9 < t < 1.4]
    assert early and late and max(early) < 0.3 and min(late) > 0.6
