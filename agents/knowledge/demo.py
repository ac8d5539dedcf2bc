"""The demo domain's knowledge index, built on first use and cached by what it is built from."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from parley.domain import demo_knowledge_path

__all__ = ["DEMO_TENANT", "demo_index_key", "ensure_demo_index"]

logger = logging.getLogger(__name__)

DEMO_TENANT = "demo"


def demo_index_key(embedder: str) -> str:
    """Hash of the demo corpus, its tenant, the index format version and the embedder kind."""
    from agents.knowledge.knowledge_base import FORMAT_VERSION

    digest = hashlib.sha256(demo_knowledge_path().read_bytes())
    digest.update(f"\0{DEMO_TENANT}\0format {FORMAT_VERSION}\0embedder {embedder}".encode())
    return digest.hexdigest()[:16]


def ensure_demo_index(cache_root: Path) -> Path:
    """The demo index folder ``cache_root/demo-<key>/``, built on first call.

    Built with the ``auto`` embedder in a temporary folder and renamed into
    place, so workers starting together never see a half-written index; when
    another process finishes first, its index is used.
    """
    from agents.knowledge.documents import Document, load_corpus
    from agents.knowledge.embedder import resolve_kind
    from agents.knowledge.knowledge_base import KnowledgeBase

    embedder = resolve_kind("auto")
    target = cache_root / f"demo-{demo_index_key(embedder)}"
    if (target / "manifest.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-kb-", dir=cache_root))
    try:
        kb = KnowledgeBase.create(tmp, embedder=embedder)
        docs = [d for d in load_corpus(demo_knowledge_path(), default_tenant=DEMO_TENANT)
                if isinstance(d, Document)]
        kb.upsert_many(docs)
        kb.save()
        tmp.rename(target)
    except OSError:
        if not (target / "manifest.json").is_file():
            raise
        return target  # another process built it first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("kb.demo_index.built path=%s embedder=%s documents=%d", target, embedder,
                len(docs))
    return target
