"""The lexical side of the hybrid index: an analyzer and fielded BM25.

BM25 weights are precomputed into one sparse ``chunks x terms`` matrix per
field (CSC, so a query reads only its own terms' columns); a query's score is
the sum of its terms' columns, fields weighted. Rebuilding from scratch is
cheap (tens of milliseconds for 10k chunks), which keeps updates simple.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = ["STOPWORDS", "Bm25Field", "analyze", "stem"]

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)

_TOKEN = re.compile(r"[a-z0-9]+(?:[+#]+|(?:[.'][a-z0-9]+)+)?")


def stem(word: str) -> str:
    """A light English suffix stripper (plural, -ing, -ed, -ly): cheap and predictable."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("edly", ""), ("ed", ""),
                         ("ly", ""), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and not word.endswith("ss"):
            base = word[: -len(suffix)] + repl
            if len(base) >= 3:
                if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2] \
                        and base[-1] not in "lsz":
                    base = base[:-1]  # stopped -> stopp -> stop
                return base
            return word
    return word


def analyze(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Lower-cased, NFKC-normalised, stemmed tokens; stopwords dropped unless asked."""
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for token in _TOKEN.findall(text):
        token = token.replace("'", "")
        if not keep_stopwords and token in STOPWORDS:
            continue
        out.append(stem(token))
    return out


@dataclass(frozen=True)
class Bm25Field:
    """BM25 weights of one field over a fixed set of rows."""

    matrix: sparse.csc_matrix  # rows x terms, float32 BM25 term weights
    vocabulary: dict[str, int]
    idf: np.ndarray
    k1: float = 1.2

    @classmethod
    def build(
        cls, token_lists: Sequence[Sequence[str]], *, k1: float = 1.2, b: float = 0.75
    ) -> Bm25Field:
        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[float] = []
        lengths = np.zeros(len(token_lists), dtype=np.float32)
        for r, tokens in enumerate(token_lists):
            lengths[r] = len(tokens)
            for term, tf in Counter(tokens).items():
                col = vocabulary.setdefault(term, len(vocabulary))
                rows.append(r)
                cols.append(col)
                tfs.append(tf)
        n = len(token_lists)
        shape = (n, len(vocabulary))
        if not tfs:
            empty = sparse.csc_matrix(shape, dtype=np.float32)
            return cls(empty, vocabulary, np.zeros(len(vocabulary), np.float32), k1)
        r_arr, c_arr = np.asarray(rows), np.asarray(cols)
        tf_arr = np.asarray(tfs, dtype=np.float32)
        df = np.bincount(c_arr, minlength=len(vocabulary)).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avg = max(float(lengths.mean()), 1e-6)
        norm = k1 * (1 - b + b * lengths[r_arr] / avg)
        weights = idf[c_arr] * tf_arr * (k1 + 1) / (tf_arr + norm)
        matrix = sparse.csc_matrix((weights.astype(np.float32), (r_arr, c_arr)), shape=shape)
        return cls(matrix, vocabulary, idf, k1)

    def columns(self, terms: Sequence[str]) -> list[int]:
        return [self.vocabulary[t] for t in dict.fromkeys(terms) if t in self.vocabulary]

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every row for a query's terms (repeats count once)."""
        cols = self.columns(terms)
        n = self.matrix.shape[0]
        if not cols:
            return np.zeros(n, dtype=np.float32)
        # Read the columns straight from the CSC arrays: scipy's fancy indexing
        # costs more than the arithmetic for a handful of query terms.
        m = self.matrix
        rows = np.concatenate([m.indices[m.indptr[c] : m.indptr[c + 1]] for c in cols])
        weights = np.concatenate([m.data[m.indptr[c] : m.indptr[c + 1]] for c in cols])
        return np.bincount(rows, weights=weights, minlength=n).astype(np.float32)

    def max_score(self, terms: Sequence[str]) -> float:
        """An upper bound of :meth:`scores` (each term's weight tends to idf·(k1+1))."""
        cols = self.columns(terms)
        return float(self.idf[cols].sum()) * (self.k1 + 1) if cols else 0.0
