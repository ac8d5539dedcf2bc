"""The end-to-end benchmark: scripted conversations through a deployment.

:func:`run_load` drives one deployment (see :mod:`benchmarks.deploy`) with
the open-loop load generator and turns the per-message timings into the
result object; :func:`compare` puts a pipeline result next to the inline
baseline's.

The steady window runs from the end of the warm-up to the last scheduled send:
throughput is the replies received in it per second, latencies are those of
the messages scheduled in it. ``lost`` counts messages acknowledged but never
answered before the drain timeout; ``unacked`` those neither acknowledged nor
answered nor refused.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.deploy import Deployment
from benchmarks.loadgen import ConnectReport, LoadGenerator, LoadResult, split_plan
from benchmarks.procstats import ProcessSampler
from benchmarks.profile import Profiler
from benchmarks.script import ConversationScript, load_script
from benchmarks.stages import stage_totals
from benchmarks.stats import latency_summary, per_second, rounded
from kernel.stats import percentile

__all__ = ["E2EOptions", "E2EResult", "compare", "run_load"]

_START_DELAY_S = 0.5


@dataclass(frozen=True)
class E2EOptions:
    conversations: int = 200
    rate: float = 200.0
    duration: float = 20.0
    warmup: float | None = None  # default: 10% of the duration, between 1 and 5 s
    drain_timeout: float = 10.0
    clients_procs: int = 1
    idle: int = 0  # extra silent sessions (the connections benchmark)
    script: ConversationScript = field(default_factory=load_script)

    def __post_init__(self) -> None:
        if self.conversations < 1:
            raise ValueError("--conversations must be at least 1")
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("--rate and --duration must be positive")
        if self.clients_procs < 1:
            raise ValueError("--clients-procs must be at least 1")
        if self.warmup is not None and not 0 <= self.warmup < self.duration:
            raise ValueError("--warmup must be at least 0 and shorter than --duration")

    @property
    def warmup_s(self) -> float:
        if self.warmup is not None:
            return self.warmup
        return min(5.0, max(1.0, 0.1 * self.duration)) if self.duration > 2 else 0.0


@dataclass
class E2EResult:
    """The JSON summary plus the raw series the HTML report plots."""

    summary: dict[str, Any]
    latencies_ms: list[float]
    timeline: dict[str, list[float]]
    connect: list[ConnectReport] = field(default_factory=list)
    #: each process's CPU (cores) about once a second: ProcessSampler.cpu_timeline()
    cpu_timeline: dict[str, list[float]] = field(default_factory=dict)


def run_load(
    deployment: Deployment,
    options: E2EOptions,
    between_phases: Callable[[], dict[str, Any]] | None = None,
    profile_dir: Path | None = None,
    after_load: Callable[[], dict[str, Any]] | None = None,
) -> E2EResult:
    """Connect every session, run the schedule, drain, summarise.

    ``between_phases`` is called once every session is open and before the first
    message (the connections benchmark measures the gateway there), ``after_load``
    once the load is drained and before the sessions close; what they return is
    merged into the summary. With ``profile_dir``, the gateway, worker and inline
    processes are sampled with py-spy during the steady window.
    """
    plans = split_plan(
        options.clients_procs, options.conversations, options.idle,
        urls=tuple(deployment.ws_urls), run_id=uuid.uuid4().hex[:10], rate=options.rate,
        duration=options.duration, drain_timeout=options.drain_timeout, script=options.script,
        api_key=deployment.api_key,
    )  # fmt: skip
    profiler = Profiler(profile_dir, deployment.processes) if profile_dir else None
    sampler = ProcessSampler()
    for name, pid in deployment.processes.items():
        sampler.add(name, pid)
    sampler.add("bench", os.getpid())
    with LoadGenerator(plans) as generator:
        reports = generator.connect()
        for i, pid in enumerate(generator.pids):
            sampler.add(f"loadgen-{i}", pid)
        sampler.start()
        try:
            extra = between_phases() if between_phases is not None else None
            stages_before = stage_totals(deployment.worker_metrics_urls)
            start_at = time.time() + _START_DELAY_S
            sampler.set_window(start_at + options.warmup_s, start_at + options.duration)
            if profiler is not None:
                profiler.schedule(start_at + options.warmup_s, options.duration - options.warmup_s)
            generator.go(start_at)
            results = generator.results(timeout=options.duration + options.drain_timeout + 120)
            stages = stage_totals(deployment.worker_metrics_urls).since(stages_before)
            if after_load is not None:
                extra = {**(extra or {}), **after_load()}
            generator.release()
        finally:
            sampler.stop()
    result = summarize(results, reports, options)
    result.summary["target"] = deployment.kind
    result.summary["deployment"] = deployment.details
    usage = sampler.report()
    result.summary.update(cpu_per_message(usage["processes"], result.summary, usage["machine"]))
    result.summary["processes"] = usage["processes"]
    result.summary["machine"] = {**usage["machine"], "window_s": usage["window_s"]}
    result.cpu_timeline = sampler.cpu_timeline()
    if deployment.worker_metrics_urls:
        result.summary["worker_stages"] = stages
    if extra:
        result.summary.update(extra)
    if profiler is not None:
        result.summary["profiles"] = profiler.finish()
    return result


def cpu_per_message(
    processes: dict[str, dict[str, Any]], summary: dict[str, Any], machine: dict[str, Any]
) -> dict[str, Any]:
    """CPU milliseconds per replied message, per process and for the system under test.

    Unlike throughput, this barely moves when other programs share the cores, so
    it is the figure to compare between runs on a busy machine. The capacity
    estimate is what the system under test would reach with every core to itself
    (CPU-bound, perfectly scheduled): an upper bound, not a measurement.
    """
    throughput = summary.get("throughput_msgs_per_s") or 0
    total = 0.0
    for name, figures in processes.items():
        util = figures.get("cpu_util")
        per_msg = util * 1000 / throughput if util is not None and throughput else None
        figures["cpu_ms_per_msg"] = None if per_msg is None else round(per_msg, 3)
        if per_msg is not None and not name.startswith(("loadgen", "bench")):
            total += per_msg
    cores = machine.get("cores") or 1
    return {
        "cpu_ms_per_msg": round(total, 3) if total else None,
        "capacity_estimate_msgs_per_s": round(cores * 1000 / total) if total else None,
    }


@dataclass
class _Tally:
    """The messages of a run: every one counted, and the latencies of those scheduled
    inside the measured window (after the warm-up, before the end)."""

    warmup: float
    duration: float
    sent: int = 0
    acked: int = 0
    replied: int = 0
    lost: int = 0  # acknowledged, never answered
    unacked: int = 0
    refused: int = 0
    duplicated: int = 0
    latencies: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    sent_times: list[float] = field(default_factory=list)
    reply_times: list[float] = field(default_factory=list)
    latency_by_second: dict[int, list[float]] = field(default_factory=dict)
    latency_by_turn: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, r: LoadResult, script: ConversationScript) -> None:
        self.errors.update(r.errors)
        self.duplicated += r.duplicated
        turn_of = [script.turn_name(j) for count in r.message_counts for j in range(count)]
        for turn, sched, sent_at, ack_at, reply_at, fail_at in zip(
            turn_of, r.scheduled, r.sent, r.acked, r.replied, r.failed, strict=True
        ):
            if math.isnan(sent_at):
                continue
            self.sent += 1
            self.sent_times.append(sent_at)
            has_reply, has_ack = not math.isnan(reply_at), not math.isnan(ack_at)
            self.acked += has_ack
            self.refused += not math.isnan(fail_at)
            if has_reply:
                self.replied += 1
                self.reply_times.append(reply_at)
            elif math.isnan(fail_at):
                self.lost += has_ack
                self.unacked += not has_ack
            if not self.warmup <= sched < self.duration:
                continue
            self.send_lags.append((sent_at - sched) * 1000)
            if has_ack:
                self.ack_latencies.append((ack_at - sched) * 1000)
            if has_reply:
                latency = (reply_at - sched) * 1000
                self.latencies.append(latency)
                self.latency_by_turn.setdefault(turn, []).append(latency)
                self.latency_by_second.setdefault(int(sched), []).append(latency)


def _pauses_summary(pauses: list[float]) -> dict[str, Any]:
    """The load processes' own full collections during the load (their pauses delay
    sends and reads alike, so a long one shows up as latency of the system)."""
    return {"count": len(pauses), "total_s": round(sum(pauses), 3),
            "max_s": round(max(pauses, default=0.0), 3)}


def summarize(
    results: list[LoadResult], reports: list[ConnectReport], options: E2EOptions
) -> E2EResult:
    warmup, duration = options.warmup_s, options.duration
    window = duration - warmup
    tally = _Tally(warmup, duration)
    for r in results:
        tally.add(r, options.script)
    errors = tally.errors
    reply_times, sent_times = tally.reply_times, tally.sent_times
    in_window = sum(1 for t in reply_times if warmup <= t < duration)
    connected = sum(rep.connected for rep in reports)
    connect_s = max((rep.seconds for rep in reports), default=0.0)
    for rep in reports:
        errors.update(rep.errors)
    summary: dict[str, Any] = {
        "config": {
            "conversations": options.conversations,
            "rate": options.rate,
            "duration_s": duration,
            "warmup_s": warmup,
            "drain_timeout_s": options.drain_timeout,
            "clients_procs": len(results),
            "script": options.script.source,
        },
        "sent": tally.sent,
        "acked": tally.acked,
        "replied": tally.replied,
        "lost": tally.lost,
        "unacked": tally.unacked,
        "refused": tally.refused,
        "duplicated": tally.duplicated,
        "throughput_msgs_per_s": rounded(in_window / window if window > 0 else math.nan, 1),
        "offered_msgs_per_s": options.rate,
        **latency_summary(tally.latencies),
        **latency_summary(tally.ack_latencies, "ack_latency_ms"),
        "send_lag_ms_p99": rounded(percentile(sorted(tally.send_lags), 99)),
        # Which turns are slow: questions and follow-ups may take the knowledge path.
        "latency_ms_by_turn": {
            turn: {"n": len(values), **_short(latency_summary(values, "ms"))}
            for turn, values in tally.latency_by_turn.items()
        },
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "connect": {
            "sessions": connected,
            "failed": sum(rep.failed for rep in reports),
            "seconds": round(connect_s, 2),
            "per_s": round(connected / connect_s, 1) if connect_s > 0 else None,
        },
        "idle_sessions": sum(r.idle_total for r in results),
        "idle_sessions_open_at_end": sum(r.idle_open_at_end for r in results),
        "loadgen_full_gc": _pauses_summary([p for r in results for p in r.full_gc_pauses]),
    }
    until = max([duration, *sent_times, *reply_times])
    seconds = range(math.ceil(until))
    timeline = {
        "second": [float(s) for s in seconds],
        "sent": [float(n) for n in per_second(sent_times, until)],
        "replied": [float(n) for n in per_second(reply_times, until)],
        "p50_ms": [_pct(tally.latency_by_second.get(s), 50) for s in seconds],
        "p99_ms": [_pct(tally.latency_by_second.get(s), 99) for s in seconds],
    }
    return E2EResult(summary, tally.latencies, timeline, reports)


def _short(summary: dict[str, float | None]) -> dict[str, float | None]:
    return {key.removeprefix("ms_"): summary[key] for key in ("ms_p50", "ms_p99", "ms_max")}


def _pct(values: list[float] | None, q: float) -> float:
    return percentile(sorted(values), q) if values else math.nan


def compare(pipeline: dict[str, Any], inline: dict[str, Any]) -> dict[str, Any]:
    """Pipeline figures as ratios to the inline baseline's."""

    def ratio(key: str) -> float | None:
        a, b = pipeline.get(key), inline.get(key)
        if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
            return None
        return round(a / b, 3)

    return {
        "pipeline": pipeline,
        "inline": inline,
        "ratio_throughput": ratio("throughput_msgs_per_s"),
        "ratio_latency_p50": ratio("latency_ms_p50"),
        "ratio_latency_p99": ratio("latency_ms_p99"),
    }
