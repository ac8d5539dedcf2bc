"""Second stage: a cross-feature reranker over the first stage's candidates.

For each (question, candidate passage) pair it computes features that look at
both sides at once — dense similarities to the title and to the passage and
their interaction, BM25 per field (as a share of the question's best possible
score), how much of the question the title and passage cover, shared bigrams —
and scores them with a logistic model. Every feature is absolute (none is
relative to the other candidates), so the score means the same across
questions.
The output is a probability that the passage answers the question, which is
also the answer's confidence (and drives refusals).

The shipped weights (``rerankers/<embedder>.json`` beside this file) were
fitted by ``parley kb train-reranker`` on part of a public FAQ dataset's
development queries (see docs/knowledge.md); an index may carry its own
``reranker.json``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FEATURE_NAMES", "Candidates", "Reranker", "candidate_features"]

SHIPPED = Path(__file__).resolve().parent / "rerankers"

FEATURE_NAMES = (
    "dense_title",
    "dense_passage",
    "bm25_title",
    "bm25_passage",
    "title_coverage",
    "passage_coverage",
    "title_bigrams",
    "dense_product",
    "dense_max",
)


@dataclass(frozen=True)
class Candidates:
    """First-stage signals of the candidate rows of one question."""

    dense_title: np.ndarray
    dense_passage: np.ndarray
    bm25_title: np.ndarray  # normalised to [0, 1] by the question's best possible score
    bm25_passage: np.ndarray
    title_tokens: Sequence[Sequence[str]]
    title_sets: Sequence[frozenset[str]]
    passage_sets: Sequence[frozenset[str]]


def _bigrams(tokens: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(tokens))


def candidate_features(query_tokens: Sequence[str], c: Candidates) -> np.ndarray:
    """``[candidates, len(FEATURE_NAMES)]`` float32 feature matrix."""
    n = len(c.dense_title)
    q = set(query_tokens)
    qb = _bigrams(query_tokens)
    cover_t = np.zeros(n, np.float32)
    cover_p = np.zeros(n, np.float32)
    bigram_t = np.zeros(n, np.float32)
    if q:
        for i in range(n):
            cover_t[i] = len(q & c.title_sets[i]) / len(q)
            cover_p[i] = len(q & c.passage_sets[i]) / len(q)
            if qb and cover_t[i] * len(q) >= 2:  # a shared bigram needs two shared words
                bigram_t[i] = len(qb & _bigrams(c.title_tokens[i])) / len(qb)
    return np.stack(
        [
            c.dense_title,
            c.dense_passage,
            c.bm25_title,
            c.bm25_passage,
            cover_t,
            cover_p,
            bigram_t,
            c.dense_title * c.dense_passage,
            np.maximum(c.dense_title, c.dense_passage),
        ],
        axis=1,
    ).astype(np.float32)


class Reranker:
    """A logistic model over :data:`FEATURE_NAMES` (standardised inside)."""

    def __init__(self, weights: np.ndarray, bias: float, mean: np.ndarray, scale: np.ndarray,
                 *, info: dict[str, object] | None = None) -> None:
        if not (len(weights) == len(mean) == len(scale) == len(FEATURE_NAMES)):
            raise ValueError(f"reranker needs {len(FEATURE_NAMES)} weights")
        self.weights = np.asarray(weights, np.float32)
        self.bias = float(bias)
        self.mean = np.asarray(mean, np.float32)
        self.scale = np.where(np.asarray(scale, np.float32) > 1e-6, scale, 1.0).astype(np.float32)
        self.info = info or {}

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(((features - self.mean) / self.scale) @ self.weights + self.bias)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-self.logits(features))), dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps({
            "features": list(FEATURE_NAMES),
            "weights": [round(float(x), 6) for x in self.weights],
            "bias": round(self.bias, 6),
            "mean": [round(float(x), 6) for x in self.mean],
            "scale": [round(float(x), 6) for x in self.scale],
            "info": self.info,
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Reranker:
        raw = json.loads(text)
        if list(raw.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError("reranker weights were fitted on a different feature set")
        return cls(np.array(raw["weights"]), raw["bias"], np.array(raw["mean"]),
                   np.array(raw["scale"]), info=raw.get("info") or {})

    @classmethod
    def default(cls, embedder_kind: str = "minilm") -> Reranker:
        """The shipped weights for an embedder, or a hand-set prior when none are shipped."""
        path = SHIPPED / f"{embedder_kind.removesuffix('-int8')}.json"
        if path.is_file():
            return cls.from_json(path.read_text(encoding="utf-8"))
        w = np.array([6.0, 4.0, 2.0, 1.0, 0.5, 0.3, 0.5, 2.0, 2.0])
        return cls(w, -9.0, np.zeros(len(w)), np.ones(len(w)), info={"source": "prior"})

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, *, c: float = 1.0,
            info: dict[str, object] | None = None) -> Reranker:
        """Fit on labelled candidates (needs scikit-learn, the ``train`` extra)."""
        from sklearn.linear_model import LogisticRegression

        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale = np.where(scale > 1e-6, scale, 1.0)
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit((features - mean) / scale, labels)
        return cls(model.coef_[0], float(model.intercept_[0]), mean, scale, info=info)
