"""Knowledge retrieval (RAG): hybrid search, cited answers, optional LLM.

The public surface; implementation modules are listed in docs/knowledge.md.
Heavy modules (ONNX Runtime, Faust) load when first used, so importing this
package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Answer",
    "CircuitBreaker",
    "Document",
    "Hit",
    "KbDocumentsFollower",
    "KnowledgeBase",
    "KnowledgeService",
    "KnowledgeSettings",
    "register_knowledge_agent",
]

_WHERE = {
    "Answer": "answer",
    "CircuitBreaker": "breaker",
    "Document": "documents",
    "Hit": "index",
    "KbDocumentsFollower": "follower",
    "KnowledgeBase": "knowledge_base",
    "KnowledgeService": "service",
    "KnowledgeSettings": "settings",
    "register_knowledge_agent": "agent",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agents.knowledge' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agents.knowledge.{module}"), name)
