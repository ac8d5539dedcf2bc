"""``--profile DIR``: sample the Python processes under load with py-spy.

During the steady window, ``py-spy record`` samples each gateway, worker or
inline process (``--format raw``: one collapsed stack per line with its sample
count, the input of any flame graph tool). :func:`summarize_collapsed` turns
such a file into the functions that hold the most samples, inclusive and self.
py-spy comes with the ``bench`` extra: ``pip install 'parley[bench]'``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "check_profiler", "summarize_collapsed"]

_PROFILED = re.compile(r"^(gateway|worker|inline)")


def check_profiler() -> str:
    """The py-spy executable; raise ImportError with the fix when it is missing.

    Looked up beside this Python first: ``.venv/bin/parley`` runs without the venv on
    ``PATH``, and the bench extra installs py-spy into the venv."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise ImportError(
            "--profile samples with py-spy, which is not installed: pip install 'parley[bench]'"
        )
    return found


class Profiler:
    """Records every gateway/worker/inline process for ``seconds`` from ``start_epoch``."""

    def __init__(self, directory: Path, processes: dict[str, int], rate: int = 100) -> None:
        self.executable = check_profiler()
        self.directory = directory
        self.targets = {name: pid for name, pid in processes.items() if _PROFILED.match(name)}
        self.rate = rate
        self._popen: list[subprocess.Popen[bytes]] = []
        self._timer: threading.Timer | None = None

    def schedule(self, start_epoch: float, seconds: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        delay = max(0.0, start_epoch - time.time())
        self._timer = threading.Timer(delay, self._start, args=(max(1, round(seconds)),))
        self._timer.daemon = True
        self._timer.start()

    def _start(self, seconds: int) -> None:
        for name, pid in self.targets.items():
            out = self.directory / f"{name}.collapsed.txt"
            log = (self.directory / f"{name}.py-spy.log").open("wb")
            self._popen.append(subprocess.Popen(
                [self.executable, "record", "--pid", str(pid), "--duration", str(seconds),
                 "--rate", str(self.rate), "--format", "raw", "--nonblocking", "-o", str(out)],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
            log.close()

    def finish(self, timeout: float = 60) -> dict[str, str]:
        """Wait for the recordings; return ``{name: summary file}``."""
        if self._timer is not None:
            self._timer.join()
        for popen in self._popen:
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
        written = {}
        for name in self.targets:
            collapsed = self.directory / f"{name}.collapsed.txt"
            if collapsed.is_file():
                summary = self.directory / f"{name}.top.txt"
                summary.write_text(summarize_collapsed(collapsed), encoding="utf-8")
                written[name] = str(summary)
        return written


# Where a sample's time goes: the innermost frame that belongs to one of these
# (stdlib plumbing such as asyncio or threading is looked through).
_COMPONENTS = (
    ("avro codecs", ("streams/codecs.py", "fastavro")),
    ("redis client", ("redis/",)),
    ("aiokafka producer", ("aiokafka/producer",)),
    ("aiokafka consumer", ("aiokafka/consumer",)),
    ("aiokafka protocol/io", ("aiokafka/",)),
    ("confluent-kafka (gateway bus)", ("gateway/bus.py",)),
    ("metrics (prometheus/sensors)", ("prometheus_client", "faust/sensors")),
    ("faust streams/agents", ("faust/",)),
    ("mode services", ("mode/",)),
    ("websockets", ("websockets/",)),
    ("json", ("json/", "orjson")),
    ("parley gateway", ("gateway/",)),
    ("parley agents", ("agents/",)),
    ("parley streams/state", ("streams/",)),
    ("parley benchmarks", ("benchmarks/",)),
)
_PLUMBING = (
    "asyncio/",
    "threading.py",
    "contextlib.py",
    "<frozen",
    "selectors.py",
    "abc.py",
    "typing.py",
    "functools.py",
    "weakref",
    "uuid.py",
    "enum.py",
    "logging/",
)


_LOOP_RUNNERS = (
    "Runner.run ",
    "Worker.execute_from_commandline",
    "ServiceThread._start_thread",
    "run (uvloop",
)


def _component(frames: list[str]) -> str:
    if any(frames[-1].startswith(runner) for runner in _LOOP_RUNNERS):
        return "event loop and I/O (C) / other"
    for frame in reversed(frames):
        if any(mark in frame for mark in _PLUMBING):
            continue
        for name, marks in _COMPONENTS:
            if any(mark in frame for mark in marks):
                return name
        if "parley/" in frame or "click/" in frame or "runners.py" in frame:
            break
    return "event loop and I/O (C) / other"


def summarize_collapsed(path: Path, top: int = 30) -> str:
    """Samples by component, and the ``top`` functions by inclusive and by self samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
            components[_component(frames)] += count
    lines = [f"{path.name}: {total} samples", "", "by component (innermost frame):"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in components.most_common()]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n" if total else f"{path.name}: no samples\n"
