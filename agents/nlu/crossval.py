"""K-fold cross-validation: ``parley nlu cross-validate``.

For labelled data without a held-out split of its own (Banking77 ships one
training file), every example is predicted once by a model that never saw it:

1. the examples are dealt into ``folds`` folds, stratified by intent (each
   intent's examples shuffled with :attr:`TrainingParams.seed`, then all of them
   dealt round-robin, so every fold gets its share of every intent; examples
   without an intent are dealt the same way as one group);
2. for each fold, a model is trained with the given :class:`TrainingParams` on
   the other folds (its calibration split is carved out of those, as
   ``parley nlu train`` always does) and evaluated on the fold
   (:func:`agents.nlu.evaluate.evaluate`).

The report has the same metric names as ``parley nlu evaluate``: the intent
metrics are means over folds, each with its standard deviation over folds
(``<metric>_std``); entity precision, recall and F1 are pooled (strict micro
over every fold's spans together; ``entity_f1_std`` is over the folds' own
F1). ``per_fold`` holds every fold's figures.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.nlu.data import Example
from agents.nlu.evaluate import entity_scores, evaluate
from agents.nlu.model import NLUModel
from agents.nlu.train import TrainingParams, train_model

__all__ = ["FOLD_METRICS", "cross_validate", "format_cv_report", "stratified_folds"]

#: Metrics averaged over folds (when the data has what they need); entity F1 is pooled.
FOLD_METRICS = ("accuracy", "top1_accuracy", "macro_f1", "ece", "in_scope_accuracy",
                "oos_recall")


def stratified_folds(examples: Sequence[Example], folds: int, seed: int = 0) -> list[list[int]]:
    """The indices of ``examples`` in each of ``folds`` folds (see the module docstring)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(examples) < folds:
        raise ValueError(f"{len(examples)} examples cannot fill {folds} folds")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.intent or "", []).append(i)
    rng = random.Random(seed)
    dealt: list[int] = []
    for name in sorted(groups):
        members = groups[name]
        rng.shuffle(members)
        dealt += members
    return [sorted(dealt[k::folds]) for k in range(folds)]


def cross_validate(
    examples: Sequence[Example],
    params: TrainingParams,
    *,
    folds: int = 5,
    reference_time: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate once per fold; the report described in the module docstring."""
    parts = stratified_folds(examples, folds, params.seed)
    per_fold: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="parley-nlu-cv-") as tmp:
        for k, test_idx in enumerate(parts, 1):
            held = set(test_idx)
            train = [e for i, e in enumerate(examples) if i not in held]
            test = [examples[i] for i in test_idx]
            if progress:
                progress(f"fold {k}/{folds}: training on {len(train)}, testing on {len(test)}")
            folder = Path(tmp) / f"fold-{k}"
            train_model(train, folder, params)
            report = evaluate(NLUModel.load(folder), test, reference_time=reference_time,
                              latency_samples=1)
            shutil.rmtree(folder)  # a fine-tuned context encoder is 90 MB a fold
            per_fold.append({"fold": k, "n_train": len(train), **_fold_figures(report)})
    return {"n": len(examples), "folds": folds, "seed": params.seed, **_summary(per_fold),
            "per_fold": per_fold}


def _fold_figures(report: dict[str, Any]) -> dict[str, Any]:
    """One fold's report without what does not average (latency, confusions)."""
    skip = {"confusions", "model_version", "latency_ms_p50", "latency_ms_p99"}
    return {k: v for k, v in report.items() if k not in skip}


def _summary(per_fold: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FOLD_METRICS:
        values = [f[name] for f in per_fold if name in f]
        if len(values) == len(per_fold):
            out[name] = round(statistics.fmean(values), 4)
            out[f"{name}_std"] = round(statistics.stdev(values), 4)
    annotated = [f for f in per_fold if "entity_f1" in f]
    if annotated:
        tp, fp, fn = (sum(f[f"entity_{c}"] for f in annotated) for c in ("tp", "fp", "fn"))
        out.update(entity_scores(tp, fp, fn))
        if len(annotated) > 1:
            out["entity_f1_std"] = round(statistics.stdev(f["entity_f1"] for f in annotated), 4)
    return out


def format_cv_report(report: dict[str, Any]) -> str:
    """A readable report: mean ± standard deviation, then one line per fold."""
    lines = [f"{report['folds']}-fold cross-validation of {report['n']} examples "
             f"(seed {report['seed']})"]
    for name in FOLD_METRICS:
        if f"{name}_std" in report:
            lines.append(f"  {name:<20} {report[name]:.4f} ± {report[f'{name}_std']:.4f}")
    if "entity_f1" in report:
        lines.append(f"  entity_f1 (pooled)   {report['entity_f1']:.4f} "
                     f"(precision {report['entity_precision']:.4f}, "
                     f"recall {report['entity_recall']:.4f})")
    for fold in report["per_fold"]:
        shown = ", ".join(f"{name} {fold[name]:.4f}"
                          for name in (*FOLD_METRICS, "entity_f1") if name in fold)
        lines.append(f"  fold {fold['fold']} ({fold['n']} examples): {shown}")
    return "\n".join(lines)
