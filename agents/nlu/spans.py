"""Span refinement after the tagger: which boundaries, then which type.

The tagger (:mod:`agents.nlu.tagger`) finds runs of entity tokens; two small
linear models learned from the same training data then revisit each run:

* **boundaries**: the run itself competes with its variants one token longer
  or shorter on either side and with any built-in recogniser match that
  overlaps it. A binary model scores each candidate from what changes (the
  words added or removed, their shape and rarity, whether they are cue words,
  how entity-like the tagger found them) and the best candidate is kept. It is
  trained on the tagger's out-of-fold runs over the training data, so it learns
  the annotation's conventions (are ``last``, ``the``, ``'s`` or a currency
  word inside a span? does a name go on after a rare word?) from the tagger's
  real mistakes;
* **types**: a multi-class model scores the entity types of a span from its
  words and its context (words before and after, the nearest cue word, every
  cue word before and after it in the message, where the other spans are),
  trained on the gold spans. The type is the best sum of the tagger's mean
  score for the type over the span and ``type_weight`` times this model's
  score: ``since``/``until``/``by`` anywhere around a date separate
  ``date_from``/``date_to``/``date`` better than the tagger's token view.

Both are plain weight tables applied in Python and numpy at inference
(``spans.npz`` in the model folder); scikit-learn fits them at training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agents.nlu.results import EntityMatch
from agents.nlu.tagger import CUE_WORDS, MAX_PIECES, TypeScores, shape, type_scores
from agents.nlu.text import Token

__all__ = [
    "Candidate",
    "LinearTable",
    "SpanModels",
    "TokenSpan",
    "boundary_candidates",
    "boundary_features",
    "type_features",
]

TokenSpan = tuple[int, int, str]
"""A span in token indices ``(first, last + 1, entity)``."""

Candidate = tuple[int, int, str]
"""A boundary candidate ``(first, last + 1, kind)``.

Kinds: ``run`` (the tagger's run), ``+left``/``+right``/``-left``/``-right``
(one token more or less on that side), ``rec:<entity>`` (a recogniser match).
"""

_CUE_WINDOW = 6
TYPE_WEIGHT = 0.5
"""Weight of the type model's score against the tagger's mean score for the type."""


class LinearTable:
    """A linear model over named features: ``scores = sum(value * weights[feature]) + bias``."""

    def __init__(
        self,
        index: Mapping[str, int],
        weights: npt.NDArray[np.float32],  # features x outputs
        bias: npt.NDArray[np.float32],  # outputs
    ) -> None:
        self.index = dict(index)
        self.weights = weights
        self.bias = bias
        # one output: plain floats per feature name (faster than numpy for a few features)
        self._single = (
            {name: float(weights[j, 0]) for name, j in self.index.items()}
            if weights.shape[1] == 1 else None
        )
        self._bias0 = float(bias[0])

    def scores(self, features: Mapping[str, float]) -> npt.NDArray[np.float32]:
        index = self.index
        idx = [index[name] for name in features if name in index]
        vals = [features[name] for name in features if name in index]
        if not idx:
            return self.bias.copy()
        return self.bias + np.asarray(vals, np.float32) @ self.weights[idx]

    def sum_rows(self, names: Sequence[str]) -> npt.NDArray[np.float32]:
        """Scores for binary features: the sum of their weight rows, plus the bias."""
        index = self.index
        idx = list({index[name] for name in names if name in index})
        if not idx:
            return self.bias.copy()
        out: npt.NDArray[np.float32] = self.bias + self.weights[idx].sum(axis=0)
        return out

    def score(self, features: Mapping[str, float]) -> float:
        """The single output of a one-output table."""
        if self._single is None:
            raise ValueError("score() needs a table with one output")
        weight = self._single.get
        return self._bias0 + sum([weight(name, 0.0) * value for name, value in features.items()])


def _covered(tokens: Sequence[Token], start: int, end: int) -> tuple[int, int] | None:
    inside = [i for i, t in enumerate(tokens) if t.end > start and t.start < end]
    return (inside[0], inside[-1] + 1) if inside else None


def boundary_candidates(
    tokens: Sequence[Token], run: TokenSpan, matches: Sequence[EntityMatch]
) -> list[Candidate]:
    """The run, its variants one token longer or shorter, and overlapping recogniser matches.

    A recogniser match covering exactly the run is a candidate of its own, so
    the model can learn how far to trust a recogniser that agrees with the tagger.
    """
    a, b, _ = run
    out: list[Candidate] = [(a, b, "run")]
    if a > 0:
        out.append((a - 1, b, "+left"))
    if b < len(tokens):
        out.append((a, b + 1, "+right"))
    if b - a > 1:
        out += [(a + 1, b, "-left"), (a, b - 1, "-right")]
    for match in matches:
        cover = _covered(tokens, match.start, match.end)
        if cover and cover[0] < b and a < cover[1]:
            out.append((cover[0], cover[1], "rec:" + match.entity))
    return out


def boundary_features(
    words: Sequence[str],
    tokens: Sequence[Token],
    entity_like: Sequence[float],
    type_like: Sequence[float],
    run: TokenSpan,
    candidate: Candidate,
    n_pieces: Callable[[str], int],
) -> dict[str, float]:
    """Features of a boundary candidate: the tokens it adds to or removes from the run
    (word, shape, rarity, cue word, how entity-like the tagger found them) and the
    words just outside it.

    ``entity_like[k]`` is the tagger's best entity tag score for token ``k`` minus
    its ``O`` score, ``type_like[k]`` the same for the run's type only.
    """
    a, b, entity = run
    i, j, kind = candidate
    f: dict[str, float] = {"k=" + kind: 1.0, f"k={kind}|t={entity}": 1.0}
    f["lw=" + (words[i - 1] if i > 0 else "<s>")] = 1.0  # the words just outside
    f["rw=" + (words[j] if j < len(words) else "</s>")] = 1.0
    changed = [(k, "add") for k in range(i, j) if not a <= k < b]
    changed += [(k, "rem") for k in range(a, b) if not i <= k < j]
    for k, how in changed:
        w = words[k]
        pieces = str(min(MAX_PIECES, n_pieces(w)))
        for name in (
            f"{how}:w={w}", f"{how}:sh={shape(tokens[k].text)}", f"{how}:pc={pieces}",
            f"{how}:pc|t={pieces}|{entity}", f"{how}:w|t={w}|{entity}",
        ):
            f[name] = 1.0
        if w in CUE_WORDS:
            f[how + ":cue"] = 1.0
        f[how + ":ins"] = f.get(how + ":ins", 0.0) + entity_like[k]
        f[how + ":tins"] = f.get(how + ":tins", 0.0) + type_like[k]
    return f


def type_features(
    words: Sequence[str], span: tuple[int, int], others: Sequence[tuple[int, int]]
) -> list[str]:
    """Binary features for typing the tokens ``span`` of a message; ``others`` are its other
    spans."""
    i, j = span
    n = len(words)
    names = ["b", f"first={words[i]}", f"last={words[j - 1]}", f"len={min(j - i, 4)}"]
    names += [f"sw={w}" for w in words[i:j]]
    names += [f"p{k}={words[i - k] if i >= k else '<s>'}" for k in (1, 2, 3)]
    names.append("p12=" + "_".join(words[max(0, i - 2) : i]))
    names += [f"n{k}={words[j + k - 1] if j + k - 1 < n else '</s>'}" for k in (1, 2)]
    cues = [w for w in words[max(0, i - _CUE_WINDOW) : i] if w in CUE_WORDS]
    names.append("cue=" + (cues[-1] if cues else "none"))
    names += ["anycue=" + c for c in cues]
    names += ["cue<" + w for w in set(words[:i]) & CUE_WORDS]
    names += ["cue>" + w for w in set(words[j:]) & CUE_WORDS]
    after = [w for w in words[j : j + 4] if w in CUE_WORDS]
    names.append("ncue=" + (after[0] if after else "none"))
    before = sum(1 for o in others if o[1] <= i)
    later = sum(1 for o in others if o[0] >= j)
    names.append(f"pos={min(before, 2)}/{min(later, 2)}")
    if before:
        names.append("other_before")
    if later:
        names.append("other_after")
    return names


@dataclass(frozen=True)
class SpanModels:
    """The boundary and type models of a model folder (``spans.npz``)."""

    boundary: LinearTable | None
    types: LinearTable | None
    type_labels: tuple[str, ...]
    type_weight: float = TYPE_WEIGHT

    def refine(
        self,
        tokens: Sequence[Token],
        scores: npt.NDArray[np.float32],
        tags: Sequence[str],
        runs: Sequence[TokenSpan],
        matches: Sequence[EntityMatch],
        n_pieces: Callable[[str], int],
    ) -> list[TokenSpan]:
        """Better boundaries, then better types, for the tagger's ``runs`` of one message."""
        if not runs:
            return []
        words = [t.text.lower() for t in tokens]
        types = type_scores(tuple(tags))
        by_type = types.of(scores)
        spans = list(runs)
        if self.boundary is not None:
            rows = by_type.tolist()  # a few tokens: plain floats beat small numpy calls
            outside = scores[:, tags.index("O")].tolist()
            entity_like = [max(r) - o for r, o in zip(rows, outside, strict=True)]
            chosen: list[TokenSpan] = []
            for run in runs:
                p = types.position[run[2]]
                type_like = [r[p] - o for r, o in zip(rows, outside, strict=True)]
                best, best_score = (run[0], run[1]), -np.inf
                for cand in boundary_candidates(tokens, run, matches):
                    s = self.boundary.score(boundary_features(
                        words, tokens, entity_like, type_like, run, cand, n_pieces
                    ))
                    if s > best_score:
                        best, best_score = (cand[0], cand[1]), s
                if all(best[1] <= c[0] or best[0] >= c[1] for c in chosen):
                    chosen.append((best[0], best[1], run[2]))
            spans = chosen
        if self.types is None:
            return spans
        positions, usable = _alignment(types, self.type_labels)
        if not len(usable):
            return spans
        typed = []
        bounds = [(a, b) for a, b, _ in spans]
        for a, b, _ in spans:
            others = [o for o in bounds if o != (a, b)]
            model = self.types.sum_rows(type_features(words, (a, b), others))
            total = np.add.reduce(by_type[a:b], axis=0)[positions] / (b - a)
            total += self.type_weight * model[usable]
            typed.append((a, b, self.type_labels[usable[int(np.argmax(total))]]))
        return typed

    def save(self, path: Path) -> None:
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "type_labels": np.array(self.type_labels, dtype=np.str_),
            "type_weight": np.array([self.type_weight], np.float32),
        }
        for name, table in (("boundary", self.boundary), ("types", self.types)):
            if table is None:
                continue
            names = sorted(table.index, key=lambda f: table.index[f])
            arrays[name + "_features"] = np.array(names, dtype=np.str_)
            arrays[name + "_weights"] = table.weights
            arrays[name + "_bias"] = table.bias
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> SpanModels:
        with np.load(path, allow_pickle=False) as data:
            tables: dict[str, LinearTable | None] = {}
            for name in ("boundary", "types"):
                if name + "_features" not in data:
                    tables[name] = None
                    continue
                names = data[name + "_features"].tolist()
                tables[name] = LinearTable(
                    {f: i for i, f in enumerate(names)},
                    data[name + "_weights"].astype(np.float32),
                    data[name + "_bias"].astype(np.float32),
                )
            return cls(
                tables["boundary"], tables["types"],
                tuple(data["type_labels"].tolist()), float(data["type_weight"][0]),
            )


@lru_cache(maxsize=16)
def _alignment(
    types: TypeScores, labels: tuple[str, ...]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For the type model's labels the tagger knows: their tagger type positions and
    their indices among the labels."""
    usable = [i for i, label in enumerate(labels) if label in types.position]
    positions = [types.position[labels[i]] for i in usable]
    return np.array(positions, np.int64), np.array(usable, np.int64)
