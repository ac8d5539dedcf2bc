"""Answers and the extractive way of making them.

An extractive answer quotes the best passage and says so: it is labelled as an
excerpt from a named source and never presented as generated text. The same
form is the fallback when the LLM is unavailable, with a note saying that
a generated answer was not possible.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agents.knowledge.index import Hit
from agents.knowledge.lexical import analyze

__all__ = ["REFUSAL_TEXT", "Answer", "AnswerMode", "excerpt", "extractive_answer", "refusal"]

AnswerMode = Literal["extractive", "generative", "refusal"]

REFUSAL_TEXT = (
    "I could not find this in the knowledge base, so I would rather not guess. "
    "Could you rephrase the question, or ask to talk to a person?"
)
_FALLBACK_NOTE = "A generated answer is not available right now."


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[str] = field(default_factory=list)
    mode: AnswerMode = "extractive"
    confidence: float = 0.0
    cached: bool = False
    degraded: bool = False  # an extractive fallback for a generative answer that failed
    model: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Answer:
        raw: dict[str, Any] = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def excerpt(question: str, passage: str, *, max_chars: int = 480) -> str:
    """The passage's sentences that best match the question, in order, within max_chars."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", passage) if s.strip()]
    if not sentences:
        return passage[:max_chars]
    if len(passage) <= max_chars:
        return " ".join(sentences)
    q = set(analyze(question))
    scored = sorted(range(len(sentences)),
                    key=lambda i: (-len(q.intersection(analyze(sentences[i]))), i))
    chosen: list[int] = []
    used = 0
    for i in scored:
        cost = len(sentences[i]) + 1
        if used + cost > max_chars and chosen:
            continue
        chosen.append(i)
        used += cost
        if used >= max_chars:
            break
    text = " ".join(sentences[i] for i in sorted(chosen))
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def extractive_answer(question: str, hits: Sequence[Hit], *, degraded: bool = False) -> Answer:
    """Quote the best passage, labelled as an excerpt of its source."""
    best = hits[0]
    label = f'"{best.title}" [{best.doc_id}]' if best.title else f"[{best.doc_id}]"
    body = f"Here is an excerpt from {label}: {excerpt(question, best.text)}"
    if degraded:
        body = f"{_FALLBACK_NOTE} {body}"
    return Answer(text=body, sources=[best.doc_id], mode="extractive",
                  confidence=round(best.score, 4), degraded=degraded)


def refusal(confidence: float = 0.0) -> Answer:
    return Answer(text=REFUSAL_TEXT, sources=[], mode="refusal", confidence=round(confidence, 4))
