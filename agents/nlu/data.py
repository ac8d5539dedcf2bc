"""Training and evaluation examples: JSON lines, or a bot's intents file (YAML).

Accepted per JSON line: ``{"text": ..., "intent": ...}`` and optionally
``"entities": [{"start", "end", "entity"}, ...]`` (character offsets, end
exclusive). NLU++ lines with ``"intents": [...]`` (multi-label) are accepted
too: they have no single intent and serve entity training and evaluation.

A ``.yml``/``.yaml`` file is a bot folder's intents file (docs/bots.md)::

    intents:
      track_order:
        examples:
          - where is my order [12345](order_id)?

with entities annotated inline, ``[text](entity)`` (:func:`parse_annotations`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from agents.nlu.errors import DataError

__all__ = ["Example", "SpanLabel", "canonical_lines", "load_examples", "parse_annotations"]


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


_ANNOTATION = re.compile(r"\[([^\[\]]+)\]\(([^()]*)\)")


def parse_annotations(text: str) -> tuple[str, tuple[SpanLabel, ...]]:
    """``"where is [12345](order_id)?"`` → ``("where is 12345?", (SpanLabel(9, 14,
    "order_id"),))``; a ValueError names a malformed annotation."""
    plain: list[str] = []
    spans: list[SpanLabel] = []
    pos = 0
    for m in _ANNOTATION.finditer(text):
        plain.append(text[pos:m.start()])
        start = sum(len(p) for p in plain)
        value, entity = m.group(1), m.group(2).strip()
        if not re.fullmatch(r"[A-Za-z_][\w-]*", entity):
            raise ValueError(f"annotation [{value}]({entity}) needs an entity name in (...)")
        plain.append(value)
        spans.append(SpanLabel(start, start + len(value), entity))
        pos = m.end()
    plain.append(text[pos:])
    if re.search(r"\]\(", _ANNOTATION.sub("", text)):
        raise ValueError("an annotation is malformed: write [text](entity)")
    return "".join(plain), tuple(spans)


def _load_intents_file(path: Path) -> list[Example]:
    """A bot's intents file; a problem stops with its file and line (1-based)."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(path, 0, f"cannot open: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(path, mark.line + 1 if mark else 0, f"not YAML: {exc}") from exc
    intents = _child(root, "intents")
    if not isinstance(intents, yaml.MappingNode):
        raise DataError(path, _line(intents or root), "expected an 'intents:' mapping")
    examples: list[Example] = []
    for key, body in intents.value:
        listed = _child(body, "examples") if isinstance(body, yaml.MappingNode) else body
        if not isinstance(listed, yaml.SequenceNode):
            raise DataError(path, _line(key), f"intent {key.value!r}: examples must be a list")
        for item in listed.value:
            if not isinstance(item, yaml.ScalarNode):
                raise DataError(path, _line(item), "an example must be a text")
            try:
                text, spans = parse_annotations(str(item.value))
            except ValueError as exc:
                raise DataError(path, _line(item), str(exc)) from exc
            if text.strip():
                examples.append(Example(text, str(key.value), spans))
    return examples


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == key), None)
    return None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def load_examples(paths: Sequence[Path]) -> list[Example]:
    """Read every file; a malformed line stops with its file and line number."""
    examples: list[Example] = []
    for path in paths:
        if path.suffix in (".yml", ".yaml"):
            examples += _load_intents_file(path)
            continue
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
