"""The knowledge index a worker serves, and the demo bot's, built on first use and
cached by what it is built from.

The demo corpus comes from the caller (the shipped one is ``examples/demo/knowledge.jsonl``,
passed down by the worker's composition root, ``parley up`` and the benchmarks).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from agents.encoders import embedder as encoders
from agents.knowledge import knowledge_base
from agents.knowledge.documents import Document, load_corpus
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.settings import KnowledgeSettings
from kernel.extras import MissingExtra
from kernel.settings import Settings

__all__ = ["DEMO_TENANT", "demo_index_key", "ensure_demo_index", "resolve_kb_index"]

logger = logging.getLogger(__name__)

DEMO_TENANT = "demo"


def demo_index_key(corpus: Path, embedder: str) -> str:
    """Hash of the demo ``corpus``, its tenant, the index format version and the embedder
    (kind and build version)."""
    digest = hashlib.sha256(Path(corpus).read_bytes())
    digest.update(f"\0{DEMO_TENANT}\0format {knowledge_base.FORMAT_VERSION}"
                  f"\0embedder {embedder} build {encoders.BUILD_VERSION}".encode())
    return digest.hexdigest()[:16]


def ensure_demo_index(cache_root: Path, corpus: Path) -> Path:
    """The index of the demo ``corpus``, in ``cache_root/demo-<key>/``, built on first call.

    Built with the ``auto`` embedder in a temporary folder and renamed into
    place, so workers starting together never see a half-written index; when
    another process finishes first, its index is used.
    """
    embedder = encoders.resolve_kind("auto")
    target = cache_root / f"demo-{demo_index_key(corpus, embedder)}"
    if (target / "manifest.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-kb-", dir=cache_root))
    try:
        try:
            kb = KnowledgeBase.create(tmp, embedder=embedder)
        except MissingExtra as exc:
            raise exc.needed_for("building the demo knowledge index on first start "
                                 "(PARLEY_KB_INDEX names a built index instead)") from exc
        docs = [d for d in load_corpus(Path(corpus), default_tenant=DEMO_TENANT)
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


def resolve_kb_index(settings: Settings, corpus: Path,
                     knowledge: KnowledgeSettings | None = None) -> Path | None:
    """The knowledge index a worker serves: none when the knowledge agent is off
    (PARLEY_KNOWLEDGE), else PARLEY_KB_INDEX (``knowledge.index_dir``, read from the
    environment when ``knowledge`` is not given), else the index of the demo ``corpus``,
    built once under ``settings.data_dir/kb``."""
    if not settings.knowledge:
        return None
    if knowledge is None:
        knowledge = KnowledgeSettings.from_env()
    if knowledge.index_dir:
        return Path(knowledge.index_dir)
    return ensure_demo_index(settings.data_dir / "kb", corpus)
