"""Avro schemas: the public contract of every topic.

``<name>.avsc`` in this folder is the current version of each schema.
``history/<name>.v<N>.avsc`` keeps every earlier published version, so data
written by an older producer can always be decoded (a test checks that each
current schema can read every historical version's data).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = [
    "SCHEMA_DIR",
    "Schema",
    "current",
    "history",
    "schema_names",
]

SCHEMA_DIR = Path(__file__).resolve().parent


class Schema:
    """One version of a schema: its parsed form, full name and fingerprint."""

    __slots__ = ("canonical", "fingerprint", "full_name", "parsed", "path", "raw")

    def __init__(self, raw: dict[str, Any], path: Path | None = None) -> None:
        self.raw = raw
        self.path = path
        self.parsed = parse_schema(raw)
        self.full_name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
        self.canonical = to_parsing_canonical_form(self.parsed)
        # CRC-64-AVRO fingerprint as used by single-object encoding (8 bytes, little endian).
        self.fingerprint = bytes.fromhex(fingerprint(self.canonical, "CRC-64-AVRO"))

    @classmethod
    def from_file(cls, path: Path) -> Schema:
        return cls(json.loads(path.read_text(encoding="utf-8")), path)

    def __repr__(self) -> str:
        return f"Schema({self.full_name}, fingerprint={self.fingerprint.hex()})"


def schema_names() -> list[str]:
    """Names of the current schemas (file stems): ``chat_message``, ``bot_reply``, ..."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc"))


@cache
def current(name: str) -> Schema:
    """The current version of schema ``name`` (e.g. ``"chat_message"``)."""
    path = SCHEMA_DIR / f"{name}.avsc"
    if not path.exists():
        raise KeyError(f"no schema {name!r} in {SCHEMA_DIR} (have: {', '.join(schema_names())})")
    return Schema.from_file(path)


@cache
def history(name: str) -> tuple[Schema, ...]:
    """Every earlier published version of ``name``, oldest first."""
    paths = sorted(
        (SCHEMA_DIR / "history").glob(f"{name}.v*.avsc"),
        key=lambda p: int(p.stem.rsplit(".v", 1)[1]),
    )
    return tuple(Schema.from_file(p) for p in paths)
