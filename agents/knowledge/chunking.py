"""Splitting documents into passages that fit the embedder and the prompt.

Passages follow paragraph and sentence boundaries and hold at most
``max_words`` words; a long paragraph is cut into overlapping windows so that
no sentence loses its context. Every chunk keeps its document's title, which
both the lexical and the dense index use (FAQ titles are the questions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.knowledge.documents import Document

__all__ = ["Chunk", "chunk_document", "split_sentences"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_no: int
    title: str
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """What the dense encoder sees: title and passage together."""
        return f"{self.title}. {self.text}" if self.title else self.text


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _windows(words: list[str], max_words: int, overlap: int) -> list[str]:
    step = max(1, max_words - overlap)
    out = []
    for start in range(0, len(words), step):
        out.append(" ".join(words[start : start + max_words]))
        if start + max_words >= len(words):
            break
    return out


def chunk_document(doc: Document, *, max_words: int = 160, overlap: int = 30) -> list[Chunk]:
    """The passages of ``doc`` (at least one)."""
    if max_words < 8 or not 0 <= overlap < max_words:
        raise ValueError("chunking needs max_words >= 8 and 0 <= overlap < max_words")
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", doc.text):
        words = paragraph.split()
        if not words:
            continue
        if len(words) <= max_words:
            pieces.append(" ".join(words))
            continue
        sentences = split_sentences(" ".join(words))
        for sentence in sentences:
            sw = sentence.split()
            pieces.extend(_windows(sw, max_words, overlap) if len(sw) > max_words else [sentence])
    # Greedily pack consecutive pieces into passages of up to max_words.
    passages: list[str] = []
    current: list[str] = []
    count = 0
    for piece in pieces:
        n = len(piece.split())
        if current and count + n > max_words:
            passages.append("\n".join(current))
            current, count = [], 0
        current.append(piece)
        count += n
    if current:
        passages.append("\n".join(current))
    if not passages:
        passages = [doc.title]
    return [
        Chunk(doc_id=doc.id, chunk_no=i, title=doc.title, text=p, metadata=doc.metadata)
        for i, p in enumerate(passages)
    ]
