"""The connections benchmark: many open sessions on one gateway, a few of them busy.

Opens ``clients`` WebSocket sessions to one gateway from load processes of its
own (so the gateway's file descriptors and CPU are its alone), keeps them open,
and measures the connect rate, the gateway's RSS per session, the round trip
(message → reply, from the scheduled send time) of ``active`` sessions that
each send a message every ``interval`` seconds while the rest stay idle, and
the gateway's full garbage collections (every session waits through them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.deploy import Deployment
from benchmarks.e2e import E2EOptions, E2EResult, run_load
from benchmarks.script import load_script
from benchmarks.stages import read_metrics

__all__ = ["ConnectionsOptions", "run_connections"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class ConnectionsOptions:
    clients: int = 1000
    active: int = 100
    interval: float = 1.0  # seconds between two messages of one active session
    duration: float = 10.0
    drain_timeout: float = 10.0
    clients_procs: int = 1
    settle_s: float = 1.0  # pause after connecting, before measuring the gateway's RSS

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError("--clients must be at least 1")
        if self.active < 1 or self.interval <= 0:
            raise ValueError("--active must be at least 1 and --interval positive")


def _gateway(deployment: Deployment) -> tuple[str, psutil.Process | None]:
    for name, pid in deployment.processes.items():
        if name.startswith("gateway"):
            return name, psutil.Process(pid)
    return "", None


@dataclass(frozen=True)
class _FullCollections:
    """The gateway's full collections so far: how many, their seconds, and the
    cumulative count per upper bound of ``parley_gc_pause_seconds``' buckets."""

    count: int
    total_s: float
    buckets: tuple[tuple[float, int], ...]

    def since(self, earlier: _FullCollections | None) -> dict[str, Any]:
        """The collections after ``earlier`` (all of them without it), summarised."""
        before = dict(earlier.buckets) if earlier else {}
        count = self.count - (earlier.count if earlier else 0)
        total = self.total_s - (earlier.total_s if earlier else 0.0)
        longest = next((le for le, n in self.buckets if n - before.get(le, 0) >= count), None)
        return {"count": count, "total_s": round(total, 3),
                "longest_at_most_s": longest if count else 0.0}


def _full_collections(ws_url: str) -> _FullCollections | None:
    """The gateway's full collections so far, read from its ``parley_gc_pause_seconds``."""
    text = read_metrics(f"http://{urlsplit(ws_url).netloc}/metrics")
    if text is None:
        return None  # a gateway that is not Parley's, or gone
    count, total, buckets = 0, 0.0, []
    for family in text_string_to_metric_families(text):
        if family.name != "parley_gc_pause_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("generation") != "2":
                continue
            if sample.name.endswith("_count"):
                count = int(sample.value)
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), int(sample.value)))
    return _FullCollections(count, total, tuple(sorted(buckets)))


def run_connections(deployment: Deployment, options: ConnectionsOptions) -> E2EResult:
    if len(deployment.ws_urls) != 1:
        raise ValueError("the connections benchmark loads exactly one gateway")
    active = min(options.active, options.clients)
    name, gateway = _gateway(deployment)
    rss_before = gateway.memory_info().rss if gateway is not None else 0

    gc_at: dict[str, _FullCollections | None] = {}  # "connected", "loaded"

    def measure() -> dict[str, Any]:
        time.sleep(options.settle_s)
        gc_at["connected"] = _full_collections(deployment.ws_urls[0])
        if gateway is None:
            return {"gateway_rss_before_mb": None, "gateway_rss_connected_mb": None}
        rss = gateway.memory_info().rss
        return {
            "gateway_rss_before_mb": round(rss_before / _MB, 1),
            "gateway_rss_connected_mb": round(rss / _MB, 1),
            "_rss_delta": rss - rss_before,
        }

    e2e = E2EOptions(
        conversations=active,
        rate=active / options.interval,
        duration=options.duration,
        warmup=min(1.0, options.duration / 4),
        drain_timeout=options.drain_timeout,
        clients_procs=options.clients_procs,
        idle=options.clients - active,
        script=load_script(),
    )

    def after_load() -> dict[str, Any]:
        gc_at["loaded"] = _full_collections(deployment.ws_urls[0])
        return {}

    result = run_load(deployment, e2e, between_phases=measure, after_load=after_load)
    s = result.summary
    delta = s.pop("_rss_delta", None)
    connected = s["connect"]["sessions"]
    result.summary = {
        "clients": options.clients,
        "connected": connected,
        "connect_failed": s["connect"]["failed"],
        "connect_s": s["connect"]["seconds"],
        "connect_rate_per_s": s["connect"]["per_s"],
        "gateway": name or None,
        "gateway_rss_before_mb": s.pop("gateway_rss_before_mb"),
        "gateway_rss_connected_mb": s.pop("gateway_rss_connected_mb"),
        "rss_per_connection_kb": (
            round(delta / connected / 1024, 2) if delta is not None and connected else None
        ),
        "active_sessions": active,
        "active_interval_s": options.interval,
        "rtt_ms_p50": s["latency_ms_p50"],
        "rtt_ms_p95": s["latency_ms_p95"],
        "rtt_ms_p99": s["latency_ms_p99"],
        "rtt_ms_max": s["latency_ms_max"],
        "idle_sessions_open_at_end": s["idle_sessions_open_at_end"],
        **_gc_by_phase(_full_collections(deployment.ws_urls[0]), gc_at.get("connected"),
                       gc_at.get("loaded")),
        "loadgen_full_gc": s["loadgen_full_gc"],
        **{k: s[k] for k in ("sent", "acked", "replied", "lost", "unacked", "duplicated",
                             "errors", "errors_by_kind", "target", "deployment", "processes",
                             "machine")},
    }  # fmt: skip
    return result


def _gc_by_phase(end: _FullCollections | None, connected: _FullCollections | None,
                 loaded: _FullCollections | None) -> dict[str, Any]:
    """``gateway_full_gc`` over the whole run (closing the sessions included) and
    ``gateway_full_gc_active`` between the sessions connecting and the load's end:
    the ones the active sessions' round trips can have waited through."""
    return {"gateway_full_gc": end.since(None) if end else None,
            "gateway_full_gc_active": loaded.since(connected) if loaded and connected else None}
