"""Domain packages shipped with Parley (package data).

``demo/`` is a small retail bank + online shop assistant: ``nlu.jsonl``
(intents, entity spans and out-of-scope examples) and ``responses.json``
(reply templates per intent, which may reference entities such as
``{order_id}``, plus ``quick_replies``) and ``knowledge.jsonl`` (FAQ documents
for the knowledge agent).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_DIR", "demo_knowledge_path", "demo_nlu_path", "demo_responses_path"]

DEMO_DIR = Path(__file__).parent / "demo"


def demo_nlu_path() -> Path:
    return DEMO_DIR / "nlu.jsonl"


def demo_responses_path() -> Path:
    return DEMO_DIR / "responses.json"


def demo_knowledge_path() -> Path:
    return DEMO_DIR / "knowledge.jsonl"
