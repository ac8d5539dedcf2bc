"""Retrieval evaluation: hit@k, MRR@10, nDCG@10 and latency over labelled queries.

Queries are JSON lines ``{"id", "text"}``; relevance judgements are TSV lines
``query_id<TAB>doc_id<TAB>grade`` (grade > 0 is relevant), optionally under a header
row as BEIR writes them (``query-id<TAB>corpus-id<TAB>score``). Metrics are computed
on the ranked list of distinct documents a search returns; latency is the wall
time of one whole search (query embedding included), one query at a time.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.knowledge.knowledge_base import KnowledgeBase
from kernel.stats import percentile

__all__ = ["Query", "evaluate", "load_qrels", "load_queries", "metrics_for"]


@dataclass(frozen=True)
class Query:
    id: str
    text: str


def load_queries(path: Path) -> list[Query]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            out.append(Query(str(raw["id"]), str(raw["text"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: expected {{\"id\", \"text\"}} ({exc})") from exc
    return out


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Relevance judgements ``query_id<TAB>doc_id[<TAB>grade]``, grade > 0 kept.

    The first non-blank line may be a header (BEIR's ``query-id  corpus-id  score``): it
    is recognised by a grade column that is not a number, and skipped. Anywhere else a
    grade that is not a whole number is an error naming the file and line.
    """
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    seen_first = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split("\t")]
        first, seen_first = not seen_first, True
        if first and _is_header(parts):
            continue
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{path}:{number}: expected query_id<TAB>doc_id[<TAB>grade], "
                             f"got {line!r}")
        try:
            grade = int(parts[2]) if len(parts) > 2 and parts[2] else 1
        except ValueError:
            raise ValueError(f"{path}:{number}: the grade {parts[2]!r} is not a whole number "
                             "(expected query_id<TAB>doc_id<TAB>grade)") from None
        if grade > 0:
            qrels[parts[0]][parts[1]] = grade
    return dict(qrels)


def _is_header(parts: Sequence[str]) -> bool:
    """A first line whose grade column is not a number, e.g. ``query-id corpus-id score``."""
    if len(parts) < 3:
        return False
    try:
        int(parts[2])
    except ValueError:
        return True
    return False


def metrics_for(ranked: Sequence[str], relevant: Mapping[str, int]) -> dict[str, float]:
    """Per-query metrics of one ranked list of doc ids."""
    top = list(ranked[:10])
    flags = [doc in relevant for doc in top]
    first = next((i for i, f in enumerate(flags) if f), None)
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(top))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return {
        "hit_at_1": float(any(flags[:1])),
        "hit_at_5": float(any(flags[:5])),
        "hit_at_10": float(any(flags[:10])),
        "mrr_at_10": 0.0 if first is None else 1.0 / (first + 1),
        "ndcg_at_10": dcg / idcg if idcg else 0.0,
    }


def evaluate(kb: KnowledgeBase, queries: Iterable[Query], qrels: Mapping[str, Mapping[str, int]],
             *, tenant: str = "default", warmup: int = 5) -> dict[str, Any]:
    """One JSON-able object of mean metrics and latency percentiles over judged queries."""
    judged = [q for q in queries if qrels.get(q.id)]
    if not judged:
        raise ValueError("no query has a relevance judgement: check that the ids match")
    for q in judged[:warmup]:
        kb.search(tenant, q.text, k=10)
    totals: dict[str, float] = defaultdict(float)
    latencies = []
    for q in judged:
        began = time.perf_counter()
        hits = kb.search(tenant, q.text, k=10)
        latencies.append((time.perf_counter() - began) * 1000)
        for name, value in metrics_for([h.doc_id for h in hits], qrels[q.id]).items():
            totals[name] += value
    n = len(judged)
    result: dict[str, Any] = {"n": n}
    result.update({name: round(value / n, 4) for name, value in totals.items()})
    latencies.sort()
    result["latency_ms_p50"] = round(percentile(latencies, 50), 3)
    result["latency_ms_p99"] = round(percentile(latencies, 99), 3)
    return result
