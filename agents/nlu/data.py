"""Training and evaluation examples in JSON lines.

Accepted per line: ``{"text": ..., "intent": ...}`` and optionally
``"entities": [{"start", "end", "entity"}, ...]`` (character offsets, end
exclusive). NLU++ lines with ``"intents": [...]`` (multi-label) are accepted
too: they have no single intent and serve entity training and evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.nlu.errors import DataError

__all__ = ["Example", "SpanLabel", "canonical_lines", "load_examples"]


@dataclass(frozen=True, slots=True)
class SpanLabel:
    start: int
    end: int
    entity: str


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    intent: str | None = None
    entities: tuple[SpanLabel, ...] | None = None  # None: not annotated for entities


def _parse(obj: object, path: Path, line: int) -> Example:
    if not isinstance(obj, dict):
        raise DataError(path, line, "expected a JSON object")
    text = obj.get("text")
    if not isinstance(text, str):
        raise DataError(path, line, "'text' must be a string")
    intent = obj.get("intent")
    if intent is not None and (not isinstance(intent, str) or not intent):
        raise DataError(path, line, "'intent' must be a non-empty string")
    raw_entities = obj.get("entities")
    entities: tuple[SpanLabel, ...] | None = None
    if raw_entities is not None:
        if not isinstance(raw_entities, list):
            raise DataError(path, line, "'entities' must be a list")
        spans = []
        for ent in raw_entities:
            try:
                start, end, name = int(ent["start"]), int(ent["end"]), str(ent["entity"])
            except (KeyError, TypeError, ValueError) as exc:
                reason = f"bad entity {ent!r}: needs start, end, entity"
                raise DataError(path, line, reason) from exc
            if not 0 <= start < end <= len(text):
                raise DataError(path, line, f"entity span {start}:{end} outside the text")
            spans.append(SpanLabel(start, end, name))
        entities = tuple(sorted(spans, key=lambda s: (s.start, s.end)))
    return Example(text, intent, entities)


def load_examples(paths: Sequence[Path]) -> list[Example]:
    """Read every file; a malformed line stops with its file and line number."""
    examples: list[Example] = []
    for path in paths:
        try:
            handle = path.open(encoding="utf-8")
        except OSError as exc:
            raise DataError(path, 0, f"cannot open: {exc.strerror}") from exc
        with handle:
            for n, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataError(path, n, f"not JSON: {exc.msg}") from exc
                examples.append(_parse(obj, path, n))
    return examples


def canonical_lines(examples: Iterable[Example]) -> list[str]:
    """One canonical JSON string per example (for the training-data hash)."""
    out = []
    for ex in examples:
        item: dict[str, object] = {"text": ex.text, "intent": ex.intent}
        if ex.entities is not None:
            item["entities"] = [[s.start, s.end, s.entity] for s in ex.entities]
        out.append(json.dumps(item, sort_keys=True, ensure_ascii=False))
    return out
