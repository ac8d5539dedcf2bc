"""Retrieval latency on its own (``parley bench kb``) and synthetic indexes for it.

:func:`run_kb_bench` opens an index with one ONNX Runtime thread and runs the
given questions one after another, in one thread, for ``seconds``: each
measured query is a whole search (question embedding, BM25, dense scoring,
reranking). Wall-clock percentiles include waiting for a core on a busy
machine; ``cpu_ms_*`` (the thread's CPU time per query) is the cost on one
core without that wait, and ``load_avg_1m`` says how busy the machine was.
:func:`build_synthetic_index` writes an index of ``chunks`` one-passage
documents of Zipf-distributed English words, for the latency target on a
10k-chunk index (``parley kb synth``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.knowledge.documents import Document
from agents.knowledge.index import DocEntry
from agents.knowledge.knowledge_base import KnowledgeBase
from kernel.stats import percentile

__all__ = ["build_synthetic_index", "run_kb_bench", "synthetic_documents"]


def run_kb_bench(index_dir: Path, queries: Sequence[str], seconds: float, *,
                 tenant: str | None = None, warmup: int = 20) -> dict[str, Any]:
    """p50/p99 latency and queries/s of searches on one thread."""
    if not queries:
        raise ValueError("the KB benchmark needs at least one query")
    kb = KnowledgeBase.open(Path(index_dir), threads=1)
    tenants = kb.tenants()
    if not tenants:
        raise ValueError(f"index {index_dir} holds no documents")
    tenant = tenant or ("default" if "default" in tenants else tenants[0])
    for i in range(warmup):
        kb.search(tenant, queries[i % len(queries)], k=5)
    total: list[float] = []
    embed: list[float] = []
    cpu: list[float] = []  # CPU time of this thread: latency without waiting for a core
    began = time.perf_counter()
    deadline = began + seconds
    n = 0
    index = kb.tenant(tenant)
    assert index is not None
    while True:
        q = queries[n % len(queries)]
        c0 = time.thread_time()
        t0 = time.perf_counter()
        vector = kb.embed_query(q)
        t1 = time.perf_counter()
        index.search(q, vector, k=5)
        t2 = time.perf_counter()
        cpu.append((time.thread_time() - c0) * 1000)
        embed.append((t1 - t0) * 1000)
        total.append((t2 - t0) * 1000)
        n += 1
        if t2 >= deadline:
            break
    elapsed = time.perf_counter() - began
    total.sort()
    embed.sort()
    cpu.sort()
    return {
        "index": str(index_dir),
        "embedder": kb.embedder.kind,
        "tenant": tenant,
        "chunks": index.chunk_count,
        "threads": 1,
        "queries": n,
        "seconds": round(elapsed, 3),
        "queries_per_s": round(n / elapsed, 1),
        "latency_ms_p50": round(percentile(total, 50), 3),
        "latency_ms_p90": round(percentile(total, 90), 3),
        "latency_ms_p99": round(percentile(total, 99), 3),
        "latency_ms_max": round(max(total), 3),
        "embed_ms_p50": round(percentile(embed, 50), 3),
        "embed_ms_p99": round(percentile(embed, 99), 3),
        "cpu_ms_p50": round(percentile(cpu, 50), 3),
        "cpu_ms_p99": round(percentile(cpu, 99), 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _vocabulary(kb: KnowledgeBase, size: int = 8000) -> list[str]:
    """Whole English-looking words from the embedder's own tokenizer vocabulary."""
    vocab = kb.embedder.vocabulary()
    words = sorted((w.lstrip("\u2581") for w in vocab), key=lambda w: vocab.get(w, 0))
    words = [w for w in dict.fromkeys(words) if re.fullmatch(r"[a-z]{3,12}", w)]
    return words[:size]


def synthetic_documents(words: Sequence[str], n: int, *, seed: int = 0,
                        tenant: str = "default") -> list[Document]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    p = 1.0 / ranks
    p /= p.sum()
    docs = []
    for i in range(n):
        title = " ".join(words[j] for j in rng.choice(len(words), rng.integers(5, 11), p=p))
        text = " ".join(words[j] for j in rng.choice(len(words), rng.integers(40, 120), p=p))
        docs.append(Document(id=f"synth-{i:06d}", title=title.capitalize() + "?",
                             text=text.capitalize() + ".", tenant=tenant,
                             metadata={"group": f"g{i % 10}"}))
    return docs


def build_synthetic_index(path: Path, *, chunks: int = 10_000, embedder: str = "auto",
                          model_vectors: bool = False, seed: int = 0) -> dict[str, Any]:
    """A ``chunks``-passage index at ``path``.

    With ``model_vectors`` every passage is embedded by the model (minutes for
    MiniLM on two cores); otherwise vectors are random unit vectors, which costs
    the same to search (the dense stage is a full scan) and builds in seconds.
    """
    kb = KnowledgeBase.create(path, embedder=embedder, threads=0)
    docs = synthetic_documents(_vocabulary(kb), chunks, seed=seed)
    if model_vectors:
        kb.upsert_many(docs)
    else:
        rng = np.random.default_rng(seed + 1)
        entries = []
        for doc in docs:
            doc_chunks = kb.chunk(doc)
            vectors = rng.standard_normal((len(doc_chunks) + 1, kb.embedder.dim))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors.astype(np.float32)
            entries.append(DocEntry(doc, doc_chunks,
                                    np.repeat(vectors[:1], len(doc_chunks), 0), vectors[1:]))
        kb.upsert_entries(entries)
    kb.save()
    return {"index": str(path), "embedder": kb.embedder.kind, **kb.stats()["default"],
            "model_vectors": model_vectors}
