"""CPU and memory of the processes under test, sampled with psutil.

A background thread samples every process's RSS (keeping the peak) and takes
CPU-time snapshots at the start and end of the measurement window, so each
process's CPU seconds and utilisation (1.0 = one core busy) cover exactly the
steady part of a run. A window with a known end gets a third snapshot half-way,
so each process's utilisation in the first and second half shows whether the
run was steady (the embedded broker's is not: its fetches cost more the more it
stores, docs/infra.md). The machine's total CPU over the same window tells how
much the rest of the machine (other users of the cores) took.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["ProcessSampler"]

_MB = 1024 * 1024


@dataclass
class _Tracked:
    name: str
    process: psutil.Process
    rss_peak: int = 0
    rss_last: int = 0
    cpu_start: float | None = None
    cpu_mid: float | None = None
    cpu_end: float | None = None
    alive: bool = True
    #: (monotonic time, CPU seconds) about once a second through the window
    cpu_points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _Window:
    start_epoch: float = float("inf")
    end_epoch: float = float("inf")
    started: float | None = None  # monotonic time of the start snapshot
    halfway: float | None = None
    next_point: float = 0.0  # monotonic time of the next CPU point
    ended: float | None = None
    machine_start: float = 0.0
    machine_end: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class ProcessSampler:
    """Samples named processes until :meth:`stop`; :meth:`report` gives the figures."""

    def __init__(self, interval: float = 0.25, point_interval: float = 1.0) -> None:
        self.interval = interval
        self.point_interval = point_interval
        self._tracked: list[_Tracked] = []
        self._lock = threading.Lock()
        self._window = _Window()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def add(self, name: str, pid: int) -> None:
        """Track process ``pid`` as ``name``; a process already gone is ignored."""
        try:
            tracked = _Tracked(name, psutil.Process(pid))
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._tracked.append(tracked)

    def set_window(self, start_epoch: float, end_epoch: float) -> None:
        """The wall-clock interval whose CPU time is reported."""
        with self._lock:
            self._window = _Window(start_epoch, end_epoch)

    def rss(self, name: str) -> int:
        """Current RSS in bytes of the process tracked as ``name``."""
        for tracked in self._tracked:
            if tracked.name == name:
                return int(tracked.process.memory_info().rss)
        raise KeyError(name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._sample(force_end=True)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            with self._lock:
                self._sample(force_end=False)

    def _sample(self, *, force_end: bool) -> None:
        now = time.time()
        window = self._window
        take_start = window.started is None and now >= window.start_epoch
        take_end = (
            window.started is not None
            and window.ended is None
            and (force_end or now >= window.end_epoch)
        )
        take_mid = (
            window.started is not None
            and window.halfway is None
            and not take_end
            and now >= (window.start_epoch + window.end_epoch) / 2  # inf for an open end
        )
        mono = time.monotonic()
        if take_start:
            window.started, window.machine_start = mono, _machine_busy()
        if take_mid:
            window.halfway = mono
        if take_end:
            window.ended, window.machine_end = mono, _machine_busy()
        take_point = window.started is not None and (
            take_start or take_end or (window.ended is None and mono >= window.next_point)
        )
        if take_point:
            window.next_point = mono + self.point_interval
        snapshot = take_mid or take_point  # a point is taken at the start and the end too
        for tracked in self._tracked:
            if not tracked.alive:
                continue
            try:
                with tracked.process.oneshot():
                    rss = int(tracked.process.memory_info().rss)
                    cpu = _cpu_seconds(tracked.process) if snapshot else 0.0
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                tracked.alive = False
                continue
            tracked.rss_last = rss
            tracked.rss_peak = max(tracked.rss_peak, rss)
            if take_start:
                tracked.cpu_start = cpu
            if take_mid:
                tracked.cpu_mid = cpu
            if take_end:
                tracked.cpu_end = cpu
            if take_point:
                tracked.cpu_points.append((mono, cpu))

    def cpu_timeline(self) -> dict[str, list[float]]:
        """Each process's utilisation over the window, about one point a second:
        ``{"second": [...], name: [...], ...}`` (seconds since the window began, at
        the middle of each interval); processes that died early are left out."""
        started = self._window.started
        longest = max((len(t.cpu_points) for t in self._tracked), default=0)
        series = [t for t in self._tracked if len(t.cpu_points) == longest]
        if started is None or longest < 2:
            return {}
        ref = series[0].cpu_points
        timeline = {"second": [round((a + b) / 2 - started, 2)
                               for (a, _), (b, _) in itertools.pairwise(ref)]}
        for tracked in series:
            pairs = itertools.pairwise(tracked.cpu_points)
            timeline[tracked.name] = [round((c2 - c1) / (t2 - t1), 3) if t2 > t1 else 0.0
                                      for (t1, c1), (t2, c2) in pairs]
        return timeline

    def _halves(self, tracked: _Tracked) -> list[float] | None:
        """Utilisation in the window's first and second half, when both were sampled."""
        w = self._window
        if (w.started is None or w.halfway is None or w.ended is None or tracked.cpu_start is None
                or tracked.cpu_mid is None or tracked.cpu_end is None):
            return None
        first, second = w.halfway - w.started, w.ended - w.halfway
        if first <= 0 or second <= 0:
            return None
        return [round((tracked.cpu_mid - tracked.cpu_start) / first, 3),
                round((tracked.cpu_end - tracked.cpu_mid) / second, 3)]

    def report(self) -> dict[str, Any]:
        """``{"window_s", "machine": {...}, "processes": {name: {...}}}``."""
        window = self._window
        seconds = (
            window.ended - window.started
            if window.started is not None and window.ended is not None
            else 0.0
        )
        processes: dict[str, dict[str, Any]] = {}
        total_cpu = 0.0
        for tracked in self._tracked:
            cpu_s = None
            if tracked.cpu_start is not None and tracked.cpu_end is not None:
                cpu_s = tracked.cpu_end - tracked.cpu_start
                total_cpu += cpu_s
            processes[tracked.name] = {
                "pid": tracked.process.pid,
                "cpu_s": None if cpu_s is None else round(cpu_s, 2),
                "cpu_util": None if cpu_s is None or not seconds else round(cpu_s / seconds, 3),
                "cpu_util_halves": self._halves(tracked),
                "rss_peak_mb": round(tracked.rss_peak / _MB, 1),
                "rss_end_mb": round(tracked.rss_last / _MB, 1),
            }
        machine_busy = window.machine_end - window.machine_start if seconds else 0.0
        cores = psutil.cpu_count() or 1
        return {
            "window_s": round(seconds, 2),
            "machine": {
                "cores": cores,
                "cpu_util_total": round(machine_busy / seconds, 3) if seconds else None,
                "cpu_util_measured": round(total_cpu / seconds, 3) if seconds else None,
                # Everything else on the machine (other people's processes): noise.
                "cpu_util_other": (
                    round(max(0.0, machine_busy - total_cpu) / seconds, 3) if seconds else None
                ),
                "load_avg_1m": round(psutil.getloadavg()[0], 2),
            },
            "processes": processes,
        }
