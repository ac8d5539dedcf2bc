"""Fixtures of the knowledge unit tests: a small wordllama index built once per session.

wordllama's token embeddings ship in its wheel and its ONNX graph builds in
well under a second, so these tests need no model download and no MiniLM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.encoders.embedder import Embedder, build_embedder
from agents.knowledge.knowledge_base import KnowledgeBase

from .faq_data import faq_documents


@pytest.fixture(scope="session")
def embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedder("wordllama", tmp_path_factory.mktemp("embedder") / "embedder")


@pytest.fixture(scope="session")
def embedder(embedder_dir: Path) -> Embedder:
    return Embedder(embedder_dir)


@pytest.fixture
def kb(embedder: Embedder) -> KnowledgeBase:
    knowledge = KnowledgeBase(embedder)
    knowledge.upsert_many(faq_documents())
    return knowledge
