"""Confidence calibration and the out-of-scope threshold (pure numpy).

Both are fitted on a validation split held out from the training data, never
on evaluation data:

* the softmax temperature minimises the negative log-likelihood of the
  validation labels given the decision scores;
* the out-of-scope threshold is the largest one that costs at most
  ``max_in_scope_loss`` of in-scope validation accuracy (the rest of the
  out-of-scope decisions come from a trained ``oos`` class, if the data has one).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["decide", "fit_oos_threshold", "fit_temperature", "softmax"]

F32 = npt.NDArray[np.float32]


def softmax(scores: npt.NDArray[np.floating], temperature: float) -> F32:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(scores: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]) -> float:
    """The temperature in [0.005, 20] with the lowest validation NLL (grid search)."""
    best_t, best_nll = 1.0, np.inf
    rows = np.arange(labels.shape[0])
    for t in np.geomspace(0.005, 20.0, 120):
        p = softmax(scores, float(t))
        nll = float(-np.mean(np.log(np.maximum(p[rows, labels], 1e-12))))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def decide(
    probs: F32, threshold: float, oos_index: int | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Top class per row and whether the row is out of scope."""
    top = probs.argmax(axis=1)
    oos = probs.max(axis=1) < threshold
    if oos_index is not None:
        oos |= top == oos_index
    return top, oos


def fit_oos_threshold(
    probs: F32,
    labels: npt.NDArray[np.int64],
    oos_index: int | None,
    max_in_scope_loss: float = 0.01,
) -> float:
    """Largest threshold whose in-scope validation accuracy drops by <= ``max_in_scope_loss``."""
    in_scope = labels != oos_index if oos_index is not None else np.ones_like(labels, bool)
    if not in_scope.any():
        return 0.0

    def accuracy(threshold: float) -> float:
        top, oos = decide(probs, threshold, oos_index)
        return float(np.mean((top == labels) & ~oos & in_scope) / np.mean(in_scope))

    base = accuracy(0.0)
    best = 0.0
    for t in np.linspace(0.0, 0.95, 96):
        if accuracy(float(t)) >= base - max_in_scope_loss:
            best = float(t)
    return best
