"""Evaluation of a model folder on labelled JSON lines (``parley nlu evaluate``).

Metrics:

* ``n``: examples read; ``accuracy``: the final decision (an out-of-scope
  decision counts as predicting the oos label); ``top1_accuracy``: the best
  ranked intent, ignoring the out-of-scope decision; ``macro_f1`` over the gold
  intents;
* ``ece``: expected calibration error of the top-ranked intent's confidence
  (15 equal-width bins; the share-weighted gap between confidence and
  accuracy in each): 0.03 means that, on average, an answer given with 80 %
  confidence is right 77-83 % of the time;
* when the gold data has the oos label: ``in_scope_accuracy`` (on in-scope
  examples) and ``oos_recall`` (share of oos examples decided out of scope);
* when it has entity spans: ``entity_f1``, strict (same start, end and type)
  micro F1 over the entities the trained tagger found, or over all entities if
  the model has no tagger; ``entity_precision``/``entity_recall``, and the span
  counts ``entity_tp``/``entity_fp``/``entity_fn`` (to pool several runs);
* ``latency_ms_p50``/``latency_ms_p99``: single-message ``understand`` calls.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agents.nlu.data import Example
from agents.nlu.model import NLUModel, Understanding
from kernel.stats import percentile

__all__ = ["entity_scores", "evaluate", "expected_calibration_error", "format_report"]

_BATCH = 256
_CALIBRATION_BINS = 15


def _macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    scores = []
    for label in sorted(set(gold)):
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p != label)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool],
                               bins: int = _CALIBRATION_BINS) -> float:
    """Share-weighted mean of |accuracy - mean confidence| over equal-width
    confidence bins (Guo et al., 2017)."""
    if not confidence:
        return 0.0
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    # per bin: |right answers - sum of confidences| = count * |accuracy - mean confidence|
    gap = np.bincount(which, right, bins) - np.bincount(which, conf, bins)
    return float(np.abs(gap).sum() / len(conf))


def _predict(model: NLUModel, texts: Sequence[str], reference: datetime) -> list[Understanding]:
    out: list[Understanding] = []
    for i in range(0, len(texts), _BATCH):
        out += model.understand_batch(texts[i : i + _BATCH], reference)
    return out


def evaluate(
    model: NLUModel,
    examples: Sequence[Example],
    *,
    reference_time: datetime | None = None,
    latency_samples: int = 300,
) -> dict[str, Any]:
    """All metrics as a JSON-ready dict (see the module docstring)."""
    reference = reference_time or datetime.now(UTC)
    texts = [e.text for e in examples]
    results = _predict(model, texts, reference)
    report: dict[str, Any] = {"n": len(examples), "model_version": model.version}
    labelled = [(e.intent, r) for e, r in zip(examples, results, strict=True) if e.intent]
    if labelled:
        report.update(_intent_metrics(labelled, model.oos_label))
    annotated = [(e, r) for e, r in zip(examples, results, strict=True) if e.entities is not None]
    if any(e.entities for e, _ in annotated):
        report.update(_entity_metrics(annotated, model.has_tagger))
    report.update(_latency(model, texts[: max(1, min(latency_samples, len(texts)))], reference))
    return report


def _intent_metrics(labelled: Sequence[tuple[str, Understanding]], oos: str) -> dict[str, Any]:
    gold = [g for g, _ in labelled]
    pred = [r.intent for _, r in labelled]
    top1 = [r.ranking[0][0] if r.ranking else r.intent for _, r in labelled]
    ranked = [(g, r.ranking[0]) for g, r in labelled if r.ranking]
    out: dict[str, Any] = {
        "n_intent": len(labelled),
        "accuracy": round(float(np.mean(np.array(gold) == np.array(pred))), 4),
        "top1_accuracy": round(float(np.mean(np.array(gold) == np.array(top1))), 4),
        "macro_f1": round(_macro_f1(gold, pred), 4),
        "ece": round(expected_calibration_error(
            [c for _, (_, c) in ranked], [g == i for g, (i, _) in ranked]), 4),
    }
    if oos in gold:
        ins = [(g, r) for g, r in labelled if g != oos]
        outs = [r for g, r in labelled if g == oos]
        out["in_scope_accuracy"] = round(
            float(np.mean([r.intent == g and not r.oos for g, r in ins])) if ins else 0.0, 4
        )
        out["oos_recall"] = round(float(np.mean([r.oos for r in outs])), 4)
    out["confusions"] = [
        {"gold": g, "predicted": p, "count": c}
        for (g, p), c in Counter(
            (g, p) for g, p in zip(gold, pred, strict=True) if g != p
        ).most_common(10)
    ]
    return out


def _entity_metrics(
    annotated: Sequence[tuple[Example, Understanding]], use_model: bool
) -> dict[str, Any]:
    """Strict span + type micro P/R/F1; with a tagger, only its spans count."""
    tp = fp = fn = 0
    for e, r in annotated:
        gold_spans = {(s.start, s.end, s.entity) for s in e.entities or ()}
        pred_spans = {
            (m.start, m.end, m.entity) for m in r.entities
            if not use_model or m.source == "model"
        }
        tp += len(gold_spans & pred_spans)
        fp += len(pred_spans - gold_spans)
        fn += len(gold_spans - pred_spans)
    return {**entity_scores(tp, fp, fn), "entity_tp": tp, "entity_fp": fp, "entity_fn": fn}


def entity_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Micro precision, recall and F1 from span counts."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"entity_f1": round(f1, 4), "entity_precision": round(precision, 4),
            "entity_recall": round(recall, 4)}


def _latency(model: NLUModel, sample: Sequence[str], reference: datetime) -> dict[str, Any]:
    """Single-message p50/p99 in ms over ``sample`` (after 20 warm-up calls)."""
    if not sample:
        return {}
    for t in sample[:20]:
        model.understand(t, reference)
    lat = []
    for t in sample:
        start = time.perf_counter()
        model.understand(t, reference)
        lat.append((time.perf_counter() - start) * 1000.0)
    lat.sort()
    return {"latency_ms_p50": round(percentile(lat, 50), 4),
            "latency_ms_p99": round(percentile(lat, 99), 4)}


def format_report(report: dict[str, Any]) -> str:
    """A readable multi-line report."""
    lines = [f"model {report.get('model_version', '?')}: {report['n']} examples"]
    names = [
        ("accuracy", "accuracy"), ("top1_accuracy", "top-1 accuracy (no oos decision)"),
        ("macro_f1", "macro F1"), ("ece", "calibration error (ECE)"),
        ("in_scope_accuracy", "in-scope accuracy"),
        ("oos_recall", "out-of-scope recall"), ("entity_f1", "entity F1 (strict)"),
        ("entity_precision", "entity precision"), ("entity_recall", "entity recall"),
        ("latency_ms_p50", "latency p50 (ms)"), ("latency_ms_p99", "latency p99 (ms)"),
    ]
    for key, label in names:
        if key in report:
            lines.append(f"  {label:<34} {report[key]}")
    if report.get("confusions"):
        lines.append("  most confused intents (gold -> predicted: count):")
        for c in report["confusions"]:
            lines.append(f"    {c['gold']} -> {c['predicted']}: {c['count']}")
    return "\n".join(lines)
