"""Fitting the reranker on labelled queries (``parley kb train-reranker``).

Every judged query is searched; each of its first-stage candidates becomes one
training row (features, relevant or not). Needs scikit-learn (``train`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agents.knowledge.evaluate import Query
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.rerank import Reranker

__all__ = ["collect_training_rows", "fit_reranker"]


def collect_training_rows(kb: KnowledgeBase, tenant: str, queries: Sequence[Query],
                          qrels: Mapping[str, Mapping[str, int]]
                          ) -> tuple[np.ndarray, np.ndarray]:
    index = kb.tenant(tenant)
    if index is None:
        raise ValueError(f"tenant {tenant!r} has no documents in this index")
    features, labels = [], []
    for q in queries:
        relevant = qrels.get(q.id)
        if not relevant:
            continue
        doc_ids, f = index.candidate_features(q.text, kb.embed_query(q.text))
        if len(doc_ids) == 0:
            continue
        features.append(f)
        labels.append(np.array([d in relevant for d in doc_ids], dtype=np.int8))
    if not features:
        raise ValueError("no judged query produced candidates")
    return np.concatenate(features), np.concatenate(labels)


def fit_reranker(kb: KnowledgeBase, tenant: str, queries: Sequence[Query],
                 qrels: Mapping[str, Mapping[str, int]], *, c: float = 1.0) -> Reranker:
    x, y = collect_training_rows(kb, tenant, queries, qrels)
    if y.min() == y.max():
        raise ValueError("training needs both relevant and irrelevant candidates")
    return Reranker.fit(x, y, c=c, info={
        "source": "index", "queries": len(queries), "rows": len(y),
        "positives": int(y.sum()), "embedder": kb.embedder.kind,
    })
