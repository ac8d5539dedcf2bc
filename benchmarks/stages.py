"""Where a message's time goes inside the workers, read from their ``/metrics``.

Each agent records, per batch, how old the batch's oldest event was when it
took it (``parley_agent_event_age_seconds``: from the producer's timestamp
through the broker, the fetch and the stream's queue) and how long the batch
took (``parley_agent_batch_seconds``: decoding, the work itself, producing and
waiting for the broker). Read before and after a load, the difference is what
that load cost at each stage: for the conversation agent the age is the hop
from the gateway, its batch time both steps (NLU and dialogue); for the
knowledge agent, the hop from the conversation agent.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["StageTotals", "read_metrics", "stage_totals"]

_FAMILIES = {
    "parley_agent_event_age_seconds": "age",
    "parley_agent_batch_seconds": "batch",
    "parley_agent_batch_size": "size",
}


def read_metrics(url: str, timeout: float = 5) -> str | None:
    """A Prometheus text page, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except OSError:
        return None


@dataclass(frozen=True)
class StageTotals:
    """Every agent's histogram sums and counts, added up over the workers read."""

    #: (agent, "age" | "batch" | "size") -> (sum, count)
    totals: dict[tuple[str, str], tuple[float, float]]

    @classmethod
    def parse(cls, pages: Iterable[str]) -> StageTotals:
        totals: dict[tuple[str, str], tuple[float, float]] = {}
        for text in pages:
            for family in text_string_to_metric_families(text):
                kind = _FAMILIES.get(family.name)
                if kind is None:
                    continue
                for sample in family.samples:
                    key = (sample.labels.get("agent", ""), kind)
                    total, count = totals.get(key, (0.0, 0.0))
                    if sample.name.endswith("_sum"):
                        totals[key] = (total + sample.value, count)
                    elif sample.name.endswith("_count"):
                        totals[key] = (total, count + sample.value)
        return cls(totals)

    def since(self, earlier: StageTotals) -> dict[str, dict[str, float | int | None]]:
        """Per agent, over the batches after ``earlier``: the mean age of a batch's
        oldest event and the mean batch time (ms), the batches and events per batch."""
        stages: dict[str, dict[str, float | int | None]] = {}
        for agent in dict.fromkeys(agent for agent, _ in self.totals):  # as the workers list them
            delta = {kind: self._delta(earlier, agent, kind) for kind in ("age", "batch", "size")}
            batches = int(delta["batch"][1])
            if batches == 0:
                continue
            age_sum, age_count = delta["age"]
            stages[agent] = {
                "batches": batches,
                "events_per_batch": round(delta["size"][0] / batches, 2),
                "event_age_ms_mean": round(1000 * age_sum / age_count, 2) if age_count else None,
                "batch_ms_mean": round(1000 * delta["batch"][0] / batches, 2),
            }
        return stages

    def _delta(self, earlier: StageTotals, agent: str, kind: str) -> tuple[float, float]:
        total, count = self.totals.get((agent, kind), (0.0, 0.0))
        before_total, before_count = earlier.totals.get((agent, kind), (0.0, 0.0))
        return total - before_total, count - before_count


def stage_totals(metrics_urls: Iterable[str]) -> StageTotals:
    """The workers' totals now; a worker that does not answer counts for nothing."""
    return StageTotals.parse(page for url in metrics_urls if (page := read_metrics(url)))
