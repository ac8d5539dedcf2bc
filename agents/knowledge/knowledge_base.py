"""The knowledge base: every tenant's hybrid index, one embedder, on-disk format.

An index folder::

    manifest.json                 format version, embedder, chunking, tenants
    embedder/                     model.onnx + tokenizer.json + embedder.json
    reranker.json                 (optional) reranker weights fitted for this index
    tenants/<tenant>/documents.jsonl   the documents, in order
    tenants/<tenant>/vectors.npz       title vectors per document, passage vectors per chunk

Chunks are recomputed from the documents when an index is opened (chunking is
deterministic and its settings are in the manifest), BM25 is rebuilt, vectors
are read back: opening a 10k-chunk index takes about a second and needs only
onnxruntime, tokenizers, numpy and scipy.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.encoders.embedder import Embedder, build_embedder
from agents.knowledge.chunking import Chunk, chunk_document
from agents.knowledge.documents import Document
from agents.knowledge.errors import IndexFormatError
from agents.knowledge.index import DocEntry, Filters, FirstStageWeights, Hit, TenantIndex
from agents.knowledge.rerank import Reranker
from agents.knowledge.threads import limit_blas_threads
from kernel.files import atomic_directory
from streams.keys import validate_id

__all__ = ["FORMAT_VERSION", "ChunkingConfig", "KnowledgeBase"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ChunkingConfig:
    max_words: int = 160
    overlap: int = 30


@dataclass
class _Changes:
    upserted: int = 0
    unchanged: int = 0
    tenants: set[str] = field(default_factory=set)


def _doc_entries(chunked: Sequence[tuple[Document, list[Chunk]]], titles: np.ndarray,
                 passages: np.ndarray) -> list[DocEntry]:
    """One entry per document, from its title vector (``titles[i]``, repeated per chunk) and
    its chunks' vectors (the next ``len(chunks)`` rows of ``passages``)."""
    entries, offset = [], 0
    for i, (doc, chunks) in enumerate(chunked):
        end = offset + len(chunks)
        entries.append(DocEntry(doc, chunks, np.repeat(titles[i : i + 1], len(chunks), 0),
                                passages[offset:end]))
        offset = end
    return entries


class KnowledgeBase:
    """Per-tenant hybrid indexes sharing one embedder and one reranker."""

    def __init__(self, embedder: Embedder, *, path: Path | None = None,
                 reranker: Reranker | None = None, chunking: ChunkingConfig | None = None,
                 weights: FirstStageWeights | None = None) -> None:
        self.embedder = embedder
        self.path = path
        self.reranker = reranker or Reranker.default(embedder.kind)
        self.chunking = chunking or ChunkingConfig()
        self.weights = weights or FirstStageWeights()
        self._tenants: dict[str, TenantIndex] = {}
        self._lock = threading.Lock()

    # --- construction -------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, embedder: str = "auto", threads: int = 1,
               chunking: ChunkingConfig | None = None) -> KnowledgeBase:
        """A new empty index folder with a freshly built embedder."""
        path.mkdir(parents=True, exist_ok=True)
        folder = build_embedder(embedder, path / "embedder")
        kb = cls(Embedder(folder, threads=threads), path=path, chunking=chunking)
        kb.save()
        return kb

    @classmethod
    def open(cls, path: Path, *, threads: int = 1) -> KnowledgeBase:
        """Load an index folder written by :meth:`save`."""
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise IndexFormatError(str(path), "no manifest.json; build it with `parley kb ingest`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise IndexFormatError(str(path), f"manifest.json is not JSON ({exc})") from exc
        if manifest.get("format") != FORMAT_VERSION:
            raise IndexFormatError(
                str(path), f"format {manifest.get('format')!r}, this version reads {FORMAT_VERSION}"
            )
        if threads == 1:
            limit_blas_threads(1)  # query serving: see agents/knowledge/threads.py
        reranker_path = path / "reranker.json"
        reranker = Reranker.from_json(reranker_path.read_text()) if reranker_path.is_file() \
            else None
        kb = cls(Embedder(path / "embedder", threads=threads), path=path, reranker=reranker,
                 chunking=ChunkingConfig(**manifest.get("chunking", {})))
        for tenant in manifest.get("tenants", {}):
            kb._load_tenant(tenant, path / "tenants" / tenant)
        return kb

    def _load_tenant(self, tenant: str, folder: Path) -> None:
        try:
            docs = [Document(**{**json.loads(line), "tenant": tenant})
                    for line in (folder / "documents.jsonl").read_text().splitlines() if line]
            vectors = np.load(folder / "vectors.npz")
            titles, passages = vectors["titles"], vectors["passages"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(str(folder), f"unreadable tenant data: {exc}") from exc
        if len(titles) != len(docs):
            raise IndexFormatError(str(folder), "vectors do not match the documents")
        chunked = [(d, self._chunk(d)) for d in docs]
        chunk_count = sum(len(chunks) for _, chunks in chunked)
        if chunk_count != len(passages):
            raise IndexFormatError(
                str(folder), f"{len(passages)} passage vectors for {chunk_count} chunks")
        index = self._index(tenant)
        for entry in _doc_entries(chunked, titles, passages):
            index.upsert(entry)
        index.refresh()

    # --- persistence ----------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        """Write the index (atomically per tenant) and return its folder."""
        target = path or self.path
        if target is None:
            raise ValueError("this knowledge base has no folder; pass one")
        target.mkdir(parents=True, exist_ok=True)
        if self.embedder.folder.resolve() != (target / "embedder").resolve():
            shutil.copytree(self.embedder.folder, target / "embedder", dirs_exist_ok=True)
        tenants_dir = target / "tenants"
        tenants_dir.mkdir(exist_ok=True)
        counts = {}
        for tenant, index in sorted(self._tenants.items()):
            entries = index.documents()
            with atomic_directory(tenants_dir / tenant) as tmp:
                with (tmp / "documents.jsonl").open("w", encoding="utf-8") as out:
                    for e in entries:
                        d = e.document
                        out.write(json.dumps({"id": d.id, "title": d.title, "text": d.text,
                                              "metadata": dict(d.metadata), "source": d.source},
                                             ensure_ascii=False) + "\n")
                dim = self.embedder.dim
                np.savez(tmp / "vectors.npz",
                         titles=np.stack([e.title_vectors[0] for e in entries]) if entries
                         else np.zeros((0, dim), np.float32),
                         passages=np.concatenate([e.passage_vectors for e in entries]) if entries
                         else np.zeros((0, dim), np.float32))
            counts[tenant] = {"documents": len(entries),
                              "chunks": sum(len(e.chunks) for e in entries)}
        manifest = {
            "format": FORMAT_VERSION,
            "embedder": self.embedder.meta,
            "chunking": {"max_words": self.chunking.max_words, "overlap": self.chunking.overlap},
            "tenants": counts,
        }
        tmp_manifest = target / ".manifest.json.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        tmp_manifest.replace(target / "manifest.json")
        if self.reranker.info.get("source") == "index":
            (target / "reranker.json").write_text(self.reranker.to_json())
        return target

    # --- updates ----------------------------------------------------------------------
    def _index(self, tenant: str) -> TenantIndex:
        index = self._tenants.get(tenant)
        if index is None:
            with self._lock:
                index = self._tenants.get(tenant)
                if index is None:
                    index = TenantIndex(tenant, self.embedder.dim, self.reranker, self.weights)
                    self._tenants[tenant] = index
        return index

    def _chunk(self, doc: Document) -> list[Chunk]:
        return chunk_document(doc, max_words=self.chunking.max_words,
                              overlap=self.chunking.overlap)

    def _entries(self, docs: Sequence[Document]) -> list[DocEntry]:
        chunked = [(d, self._chunk(d)) for d in docs]
        titles = self.embedder.embed([d.title or " ".join(d.text.split()[:30]) for d in docs])
        passages = self.embedder.embed([c.embed_text for _, cs in chunked for c in cs])
        return _doc_entries(chunked, titles, passages)

    def is_current(self, doc: Document) -> bool:
        """True if ``doc`` is indexed with exactly this content."""
        index = self._tenants.get(doc.tenant)
        entry = index.get(doc.id) if index else None
        return entry is not None and entry.document.content_hash == doc.content_hash

    def upsert_many(self, docs: Iterable[Document], *, batch: int = 64,
                    on_batch: Callable[[int], None] | None = None) -> _Changes:
        """Index documents (new or changed ones only), embedding in batches."""
        changes = _Changes()
        pending: list[Document] = []

        def flush() -> None:
            for entry in self._entries(pending):
                self._index(entry.document.tenant).upsert(entry)
                changes.tenants.add(entry.document.tenant)
            changes.upserted += len(pending)
            if on_batch:
                on_batch(len(pending))
            pending.clear()

        for doc in docs:
            validate_id("tenant id", doc.tenant)
            if self.is_current(doc):
                changes.unchanged += 1
                if on_batch:
                    on_batch(1)
                continue
            pending.append(doc)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        for tenant in changes.tenants:
            self._tenants[tenant].refresh()
        return changes

    def upsert_entries(self, entries: Iterable[DocEntry]) -> None:
        """Index documents whose vectors are already computed (synthetic indexes, tests)."""
        tenants = set()
        for entry in entries:
            validate_id("tenant id", entry.document.tenant)
            self._index(entry.document.tenant).upsert(entry)
            tenants.add(entry.document.tenant)
        for tenant in tenants:
            self._tenants[tenant].refresh()

    def chunk(self, doc: Document) -> list[Chunk]:
        """How ``doc`` is split into passages in this knowledge base."""
        return self._chunk(doc)

    def upsert(self, doc: Document) -> bool:
        """Index one document; False if it was already indexed with this content."""
        return self.upsert_many([doc]).upserted == 1

    def delete(self, tenant: str, doc_id: str) -> bool:
        index = self._tenants.get(tenant)
        if index is None or not index.delete(doc_id):
            return False
        index.refresh()
        return True

    # --- queries --------------------------------------------------------------------------
    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def tenant(self, tenant: str) -> TenantIndex | None:
        return self._tenants.get(tenant)

    def stats(self) -> dict[str, Any]:
        return {t: {"documents": len(i), "chunks": i.chunk_count}
                for t, i in sorted(self._tenants.items())}

    def embed_query(self, question: str) -> np.ndarray:
        return self.embedder.embed_query(question)

    def search(self, tenant: str, question: str, *, k: int = 5, filters: Filters | None = None,
               query_vector: np.ndarray | None = None) -> list[Hit]:
        """The best ``k`` passages of ``tenant``'s knowledge base for ``question``."""
        index = self._tenants.get(tenant)
        if index is None or not question.strip():
            return []
        vector = self.embed_query(question) if query_vector is None else query_vector
        return index.search(question, vector, k=k, filters=filters)
