"""Result types of the NLU (re-exported by :mod:`agents.nlu.model`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EntityMatch", "Understanding"]


@dataclass(frozen=True, slots=True)
class EntityMatch:
    """An entity found in a message; ``start``/``end`` are character offsets (end exclusive)."""

    entity: str
    start: int
    end: int
    text: str
    value: str
    source: str  # "model" or the recogniser's name


@dataclass(frozen=True, slots=True)
class Understanding:
    """What the NLU made of one message."""

    intent: str
    confidence: float
    oos: bool
    ranking: tuple[tuple[str, float], ...]  # top-5, descending
    entities: tuple[EntityMatch, ...]
    model_version: str
