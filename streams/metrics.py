"""Prometheus metrics of a worker, counted per batch rather than per record.

The worker's ``/metrics`` page shows Faust's own metrics (rebalances, commits,
assignment, web requests) and Parley's agent metrics below. Faust's sensor also
counts every record on its way in and out, four hooks per record; on a busy
worker that was a tenth of its time, so :class:`BatchMonitor` leaves those hooks
out and the agents count what they did once per batch instead.
"""

from __future__ import annotations

from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

__all__ = [
    "AGENT_BATCH_POISONED",
    "AGENT_BATCH_RETRIES",
    "AGENT_BATCH_SECONDS",
    "AGENT_BATCH_SIZE",
    "AGENT_EVENTS",
    "AGENT_EVENT_AGE_SECONDS",
    "EVENTS_DEAD_LETTERED",
    "EVENTS_DEAD_LETTER_FAILED",
    "EVENTS_PRODUCED",
    "BatchMonitor",
    "setup_worker_metrics",
]

AGENT_EVENTS = Counter("parley_agent_events_total", "Events an agent processed.", ["agent"])
AGENT_BATCH_SIZE = Histogram(
    "parley_agent_batch_size", "Events per batch an agent took from its stream.", ["agent"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
AGENT_BATCH_SECONDS = Histogram(
    "parley_agent_batch_seconds", "Time to process a batch, retries included.", ["agent"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AGENT_EVENT_AGE_SECONDS = Histogram(
    "parley_agent_event_age_seconds",
    "How old a batch's oldest event was when the agent took it: from its producer's "
    "timestamp (Kafka CreateTime) through the broker, the fetch and the stream's queue.",
    ["agent"],
    buckets=(0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
             2.5, 5, 10, 30),
)
AGENT_BATCH_RETRIES = Counter(
    "parley_agent_batch_retries_total",
    "Batches processed again because Redis or the broker was unavailable.", ["agent"],
)
AGENT_BATCH_POISONED = Counter(
    "parley_agent_batch_poisoned_total",
    "Batches that failed for a reason other than a dependency, then processed an event at "
    "a time to dead-letter the poison ones.", ["agent"],
)
EVENTS_PRODUCED = Counter(
    "parley_events_produced_total", "Events the worker's agents put on a topic.", ["topic"]
)
EVENTS_DEAD_LETTERED = Counter(
    "parley_events_dead_lettered_total",
    "Events an agent could not process (undecodable, invalid, or failing for a reason other "
    "than an unavailable dependency), forwarded to a dead-letter topic, by source topic.",
    ["topic"],
)
EVENTS_DEAD_LETTER_FAILED = Counter(
    "parley_events_dead_letter_failed_total",
    "Dead letters the broker refused (logged with their origin instead), by source topic.",
    ["topic"],
)


class BatchMonitor(PrometheusMonitor):
    """Faust's Prometheus sensor without its per-record hooks."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        pass

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


def setup_worker_metrics(app: Any) -> None:
    """Install :class:`BatchMonitor` on a Faust app and serve every metric at ``/metrics``."""
    prefix = app.conf.name.replace("-", "_").replace(".", "_")
    app.monitor = BatchMonitor(metrics=FaustMetrics.create(REGISTRY, prefix))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
