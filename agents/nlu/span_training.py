"""Training of the span refinement models (:mod:`agents.nlu.spans`).

Needs the ``train`` extra (scikit-learn). The boundary model learns from the
tagger's own mistakes: the annotated messages are split into ``folds``, a
tagger is fitted on all folds but one and run on that one, and every run it
finds, with its variants, becomes training candidates (a candidate is right
when its character span is exactly a gold span). Runs without any right
candidate are left out: they teach nothing about boundaries. The type model
learns from the gold spans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.nlu.results import EntityMatch
from agents.nlu.spans import (
    LinearTable,
    SpanModels,
    boundary_candidates,
    boundary_features,
    type_features,
)
from agents.nlu.tagger import TagDecoder
from agents.nlu.text import Token

__all__ = ["AnnotatedMessage", "fit_span_models"]

_C = 0.3
_MIN_MESSAGES_PER_FOLD = 4
_MISSING_TAG_SCORE = -10.0
"""Score of a tag an inner-fold tagger never saw (it cannot predict it)."""


@dataclass(frozen=True)
class AnnotatedMessage:
    """A training message as the tagger saw it: its rows in the token matrix."""

    tokens: Sequence[Token]
    gold: Sequence[tuple[int, int, str]]  # character spans
    matches: Sequence[EntityMatch]
    first_row: int


def _fit_linear(
    rows: Sequence[dict[str, float]], labels: Sequence[Any], seed: int
) -> tuple[LinearTable, list[Any]] | None:
    from scipy.sparse import csr_matrix
    from sklearn.svm import LinearSVC

    classes = sorted(set(labels))
    if len(classes) < 2:
        return None
    index: dict[str, int] = {}
    r: list[int] = []
    c: list[int] = []
    v: list[float] = []
    for i, feats in enumerate(rows):
        for name, value in feats.items():
            r.append(i)
            c.append(index.setdefault(name, len(index)))
            v.append(value)
    x = csr_matrix((v, (r, c)), shape=(len(rows), len(index)), dtype=np.float64)
    model = LinearSVC(C=_C, random_state=seed, max_iter=20000).fit(x, list(labels))
    coef = model.coef_.astype(np.float32)
    bias = model.intercept_.astype(np.float32)
    if coef.shape[0] == 1:
        coef = np.vstack([-coef, coef]) / 2  # two symmetric scores, one per class
        bias = np.concatenate([-bias, bias]) / 2
    return LinearTable(index, np.ascontiguousarray(coef.T), bias), list(model.classes_)


def _out_of_fold_scores(
    messages: Sequence[AnnotatedMessage],
    x: Any,
    y: npt.NDArray[np.int64],
    n_tags: int,
    folds: int,
    c: float,
    seed: int,
) -> list[npt.NDArray[np.float32]]:
    """Tag scores of every message from a tagger fitted without its fold."""
    from sklearn.svm import LinearSVC

    bounds = [(m.first_row, m.first_row + len(m.tokens)) for m in messages]
    out: list[npt.NDArray[np.float32]] = [np.zeros((0, n_tags), np.float32)] * len(messages)
    for k in range(folds):
        held = [i for i in range(len(messages)) if i % folds == k]
        mask = np.ones(x.shape[0], bool)
        for i in held:
            mask[bounds[i][0] : bounds[i][1]] = False
        model = LinearSVC(C=c, random_state=seed, max_iter=5000).fit(x[mask], y[mask])
        seen = model.classes_.tolist()
        coef = np.full((n_tags, x.shape[1]), 0.0, np.float32)
        bias = np.full(n_tags, _MISSING_TAG_SCORE, np.float32)
        if len(seen) == 2:
            coef[seen[0]], coef[seen[1]] = -model.coef_[0] / 2, model.coef_[0] / 2
            bias[seen[0]], bias[seen[1]] = -model.intercept_[0] / 2, model.intercept_[0] / 2
        else:
            coef[seen] = model.coef_
            bias[seen] = model.intercept_
        for i in held:
            a, b = bounds[i]
            out[i] = (np.asarray(x[a:b] @ coef.T) + bias).astype(np.float32)
    return out


def _token_range(tokens: Sequence[Token], start: int, end: int) -> tuple[int, int] | None:
    inside = [i for i, t in enumerate(tokens) if t.end > start and t.start < end]
    return (inside[0], inside[-1] + 1) if inside else None


def fit_span_models(
    messages: Sequence[AnnotatedMessage],
    x: Any,
    y: npt.NDArray[np.int64],
    tags: Sequence[str],
    n_pieces: Callable[[str], int],
    *,
    folds: int = 5,
    tagger_c: float = 1.0,
    seed: int = 0,
) -> SpanModels | None:
    """Fit the boundary and type models; None when the data has too few spans for either."""
    with_spans = [m for m in messages if m.gold]
    # type model: the gold spans in context
    type_rows: list[dict[str, float]] = []
    type_labels: list[str] = []
    for m in with_spans:
        words = [t.text.lower() for t in m.tokens]
        ranges = [_token_range(m.tokens, a, b) for a, b, _ in m.gold]
        for (_, _, entity), r in zip(m.gold, ranges, strict=True):
            if r is None:
                continue
            others = [o for o in ranges if o is not None and o != r]
            type_rows.append(dict.fromkeys(type_features(words, r, others), 1.0))
            type_labels.append(entity)
    fitted_types = _fit_linear(type_rows, type_labels, seed)
    # boundary model: the tagger's out-of-fold runs and their variants
    boundary: LinearTable | None = None
    if len(with_spans) >= folds * _MIN_MESSAGES_PER_FOLD:
        scores = _out_of_fold_scores(messages, x, y, len(tags), folds, tagger_c, seed)
        decoder = TagDecoder(tags)
        tag_types = decoder.types
        outside = list(tags).index("O")
        rows: list[dict[str, float]] = []
        labels: list[int] = []
        for m, s in zip(messages, scores, strict=True):
            gold = {(a, b) for a, b, _ in m.gold}
            words = [t.text.lower() for t in m.tokens]
            by_type = tag_types.of(s)
            entity_like = (by_type.max(axis=1) - s[:, outside]).tolist()
            for run in decoder.runs(s):
                type_like = (by_type[:, tag_types.position[run[2]]] - s[:, outside]).tolist()
                cands = boundary_candidates(m.tokens, run, m.matches)
                right = [(m.tokens[i].start, m.tokens[j - 1].end) in gold for i, j, _ in cands]
                if not any(right):
                    continue
                for cand, ok in zip(cands, right, strict=True):
                    rows.append(boundary_features(
                        words, m.tokens, entity_like, type_like, run, cand, n_pieces
                    ))
                    labels.append(int(ok))
        fitted = _fit_linear(rows, labels, seed)
        if fitted is not None:
            table, _ = fitted
            # one score, how right the candidate is: the column of label 1
            boundary = LinearTable(
                table.index, np.ascontiguousarray(table.weights[:, 1:]), table.bias[1:]
            )
    if fitted_types is None and boundary is None:
        return None
    if fitted_types is None:
        return SpanModels(boundary, None, ())
    type_table, type_labels_fitted = fitted_types
    return SpanModels(boundary, type_table, tuple(str(label) for label in type_labels_fitted))
