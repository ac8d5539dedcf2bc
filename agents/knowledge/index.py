"""The hybrid index of one tenant: fielded BM25 + dense vectors, then reranking.

Search, for one question:

1. **first stage** over every passage: dense cosine to ``title + passage``
   (one matrix-vector product over a precombined matrix; from 4000 passages on,
   over its projection on the 128 principal axes, which scans a third of the
   memory) and BM25 on the title and passage fields, each as a share of the
   best score the question could reach; metadata filters mask rows;
2. the best ``candidates`` rows go to the **reranker** (cross features, see
   :mod:`agents.knowledge.rerank`), one hit per document.

Updates (upsert/delete of a document) change a dictionary under a lock and mark
the index dirty; the arrays are rebuilt on the next search or :meth:`refresh`
and swapped in one assignment, so searches never see half an update.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from agents.knowledge.chunking import Chunk
from agents.knowledge.documents import Document
from agents.knowledge.lexical import Bm25Field, analyze
from agents.knowledge.rerank import Candidates, Reranker, candidate_features

__all__ = ["DocEntry", "FirstStageWeights", "Hit", "TenantIndex", "matches_filters"]

Filters = Mapping[str, "str | Sequence[str]"]


@dataclass(frozen=True)
class FirstStageWeights:
    dense_title: float = 1.0
    dense_passage: float = 1.0
    bm25_title: float = 0.25
    bm25_passage: float = 0.25
    candidates: int = 30
    # Large indexes scan a rank-reduced copy of the vectors in the first stage
    # (3x less memory traffic); candidates are then scored with the full vectors.
    reduced_dim: int = 128
    reduce_from_rows: int = 4000


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_no: int
    title: str
    text: str
    score: float  # reranker probability that the passage answers the question
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class DocEntry:
    """One document as indexed: its chunks, their tokens and vectors."""

    document: Document
    chunks: list[Chunk]
    title_vectors: np.ndarray  # [chunks, dim]
    passage_vectors: np.ndarray  # [chunks, dim]
    title_tokens: list[str] = field(default_factory=list)
    passage_tokens: list[list[str]] = field(default_factory=list)
    title_set: frozenset[str] = frozenset()
    passage_sets: list[frozenset[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.title_tokens:
            self.title_tokens = analyze(self.document.title)
        if not self.passage_tokens:
            self.passage_tokens = [analyze(c.text) for c in self.chunks]
        self.title_set = frozenset(self.title_tokens)
        self.passage_sets = [frozenset(t) for t in self.passage_tokens]


def matches_filters(metadata: Mapping[str, str], filters: Filters | None) -> bool:
    """Metadata filter: every key must match; a list value means any of its values."""
    if not filters:
        return True
    for key, wanted in filters.items():
        value = metadata.get(key)
        if isinstance(wanted, str):
            if value != wanted:
                return False
        elif value not in wanted:
            return False
    return True


@dataclass(frozen=True)
class _Snapshot:
    row_doc: list[DocEntry]
    row_chunk: list[int]
    title_vectors: np.ndarray
    passage_vectors: np.ndarray
    first_stage_vectors: np.ndarray  # w_title * title + w_passage * passage: one scan, not two
    projection: np.ndarray | None  # [dim, reduced]: first_stage_vectors are projected by it
    bm25_title: Bm25Field
    bm25_passage: Bm25Field

    @property
    def rows(self) -> int:
        return len(self.row_doc)


def _empty_snapshot(dim: int) -> _Snapshot:
    empty = np.zeros((0, dim), np.float32)
    return _Snapshot([], [], empty, empty, empty, None, Bm25Field.build([]),
                     Bm25Field.build([]))


def _normalised(bm25: Bm25Field, terms: Sequence[str]) -> np.ndarray:
    """BM25 scores as a share of the best score any row could reach for ``terms``."""
    scores = bm25.scores(terms)
    top = bm25.max_score(terms)
    return scores / top if top > 0 else scores


def _principal_axes(vectors: np.ndarray, rank: int, sample: int = 4096) -> np.ndarray:
    """``[dim, rank]`` orthonormal axes that keep most of the rows' dot products."""
    rng = np.random.default_rng(0)
    rows = vectors if len(vectors) <= sample else \
        vectors[rng.choice(len(vectors), sample, replace=False)]
    _, _, vt = np.linalg.svd(rows.astype(np.float64), full_matrices=False)
    return np.ascontiguousarray(vt[:rank].T, dtype=np.float32)


class TenantIndex:
    """Documents of one tenant, searchable while being updated from another thread."""

    def __init__(self, tenant: str, dim: int, reranker: Reranker,
                 weights: FirstStageWeights | None = None) -> None:
        self.tenant = tenant
        self.dim = dim
        self.reranker = reranker
        self.weights = weights or FirstStageWeights()
        self._docs: dict[str, DocEntry] = {}
        self._lock = threading.Lock()  # guards _docs and _dirty
        self._refresh_lock = threading.Lock()  # one rebuild at a time, in order
        self._dirty = False
        self._snapshot = _empty_snapshot(dim)

    # --- updates -------------------------------------------------------------
    def upsert(self, entry: DocEntry) -> None:
        with self._lock:
            self._docs[entry.document.id] = entry
            self._dirty = True

    def delete(self, doc_id: str) -> bool:
        with self._lock:
            removed = self._docs.pop(doc_id, None) is not None
            self._dirty = self._dirty or removed
            return removed

    def get(self, doc_id: str) -> DocEntry | None:
        return self._docs.get(doc_id)

    def documents(self) -> list[DocEntry]:
        with self._lock:
            return list(self._docs.values())

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def chunk_count(self) -> int:
        return sum(len(e.chunks) for e in self.documents())

    def refresh(self) -> None:
        """Rebuild the search arrays if anything changed (cheap when nothing did)."""
        if not self._dirty:
            return
        with self._refresh_lock:
            self._rebuild()

    def _rebuild(self) -> None:
        with self._lock:
            if not self._dirty:
                return  # another thread rebuilt while we waited
            entries = list(self._docs.values())
            self._dirty = False
        row_doc: list[DocEntry] = []
        row_chunk: list[int] = []
        titles: list[list[str]] = []
        passages: list[list[str]] = []
        for entry in entries:
            for i in range(len(entry.chunks)):
                row_doc.append(entry)
                row_chunk.append(i)
                titles.append(entry.title_tokens)
                passages.append(entry.passage_tokens[i])
        if not row_doc:
            self._snapshot = _empty_snapshot(self.dim)
            return
        title_vectors = np.ascontiguousarray(
            np.concatenate([e.title_vectors for e in entries]), dtype=np.float32)
        passage_vectors = np.ascontiguousarray(
            np.concatenate([e.passage_vectors for e in entries]), dtype=np.float32)
        w = self.weights
        combined = w.dense_title * title_vectors + w.dense_passage * passage_vectors
        projection = None
        if w.reduced_dim and len(row_doc) >= w.reduce_from_rows and self.dim > w.reduced_dim:
            projection = _principal_axes(combined, w.reduced_dim)
            combined = combined @ projection
        self._snapshot = _Snapshot(
            row_doc=row_doc,
            row_chunk=row_chunk,
            title_vectors=title_vectors,
            passage_vectors=passage_vectors,
            first_stage_vectors=np.ascontiguousarray(combined, dtype=np.float32),
            projection=projection,
            bm25_title=Bm25Field.build(titles),
            bm25_passage=Bm25Field.build(passages),
        )

    # --- search -------------------------------------------------------------------
    def _candidates(self, query: str, query_vector: np.ndarray, filters: Filters | None
                    ) -> tuple[_Snapshot, np.ndarray, np.ndarray]:
        """Snapshot, candidate rows (one per document) and their reranker features."""
        self.refresh()
        snap = self._snapshot
        none = np.zeros(0, np.int64)
        if snap.rows == 0:
            return snap, none, np.zeros((0, 0), np.float32)
        w = self.weights
        terms = analyze(query)
        bm_t = _normalised(snap.bm25_title, terms)
        bm_p = _normalised(snap.bm25_passage, terms)
        # Memory-bound: one pass over one matrix; exact per-field cosines only for candidates.
        if snap.projection is not None:
            first = snap.first_stage_vectors @ (query_vector @ snap.projection)
        else:
            first = snap.first_stage_vectors @ query_vector
        n_cand = min(w.candidates, snap.rows)
        first += w.bm25_title * bm_t + w.bm25_passage * bm_p
        if filters:
            allowed = np.fromiter(
                (matches_filters(e.document.metadata, filters) for e in snap.row_doc),
                dtype=bool, count=snap.rows)
            first = np.where(allowed, first, -np.inf)
        rows = (np.argpartition(-first, n_cand - 1)[:n_cand] if n_cand < snap.rows
                else np.arange(snap.rows))
        rows = rows[np.isfinite(first[rows])]
        if len(rows) == 0:
            return snap, none, np.zeros((0, 0), np.float32)
        # One candidate per document: its best first-stage passage.
        rows = rows[np.argsort(-first[rows], kind="stable")]
        seen: set[str] = set()
        keep = []
        for r in rows:
            doc_id = snap.row_doc[r].document.id
            if doc_id not in seen:
                seen.add(doc_id)
                keep.append(r)
        rows = np.asarray(keep, dtype=np.int64)
        features = candidate_features(terms, Candidates(
            dense_title=snap.title_vectors[rows] @ query_vector,
            dense_passage=snap.passage_vectors[rows] @ query_vector,
            bm25_title=bm_t[rows],
            bm25_passage=bm_p[rows],
            title_tokens=[snap.row_doc[r].title_tokens for r in rows],
            title_sets=[snap.row_doc[r].title_set for r in rows],
            passage_sets=[snap.row_doc[r].passage_sets[snap.row_chunk[r]] for r in rows],
        ))
        return snap, rows, features

    def search(self, query: str, query_vector: np.ndarray, *, k: int = 5,
               filters: Filters | None = None) -> list[Hit]:
        """The ``k`` best passages, one per document, best first."""
        snap, rows, features = self._candidates(query, query_vector, filters)
        if len(rows) == 0:
            return []
        probs = self.reranker.probabilities(features)
        hits = []
        for i in np.argsort(-probs, kind="stable")[:k]:
            entry = snap.row_doc[rows[i]]
            chunk = entry.chunks[snap.row_chunk[rows[i]]]
            hits.append(Hit(doc_id=entry.document.id, chunk_no=chunk.chunk_no,
                            title=entry.document.title, text=chunk.text,
                            score=float(probs[i]), metadata=entry.document.metadata))
        return hits

    def candidate_features(self, query: str, query_vector: np.ndarray
                           ) -> tuple[list[str], np.ndarray]:
        """Doc ids of a question's candidates and their reranker features (training)."""
        snap, rows, features = self._candidates(query, query_vector, None)
        return [snap.row_doc[r].document.id for r in rows], features
