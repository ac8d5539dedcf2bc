"""The model folder's ``manifest.json``: what was trained, on what, and how to run it.

A model folder holds::

    manifest.json          this file
    intent.onnx            intent classifier (absent when the data had no intents)
    intent_features.npz    n-gram vocabulary + IDF for intent.onnx
    tokenizer.json         wordllama tokenizer (intent.onnx's embedding branch, tagger features)
    tagger.onnx            entity tagger (absent when the data had no entity spans)
    tagger_features.json   the tagger's feature vocabulary
    spans.npz              span refinement: boundary and type weight tables (optional)
    intent_context.onnx    the intent model with a context encoder's features (optional)
    context/               that encoder: model.onnx, tokenizer.json, embedder.json
    entities/              the entity encoder (optional): model.onnx, tokenizer.json,
                           entity_encoder.json
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.nlu.errors import ManifestError

__all__ = ["FORMAT", "MANIFEST_NAME", "Manifest", "hash_training_data"]

FORMAT = 2
"""2: the tagger reads word rarity from ``tokenizer.json`` (format 1 folders: retrain)."""
MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    version: str
    created: str
    training_data_sha256: str
    code_version: str
    oos_label: str
    labels: list[str] = field(default_factory=list)
    temperature: float = 1.0
    oos_threshold: float = 0.0
    entity_labels: list[str] = field(default_factory=list)
    tagger_tags: list[str] = field(default_factory=list)
    max_text_chars: int = 1000
    recognisers: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    """With a context encoder: ``encoder``, ``weight``, and the context model's
    ``temperature``, ``oos_threshold`` and ``route_below`` (see ``TrainingParams``)."""
    format: int = FORMAT

    @property
    def has_intents(self) -> bool:
        return "intent_model" in self.files

    @property
    def has_tagger(self) -> bool:
        return "tagger_model" in self.files

    def save(self, folder: Path) -> Path:
        path = folder / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", "utf-8")
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError as exc:
            reason = f"no {MANIFEST_NAME} (train one with `parley nlu train`)"
            raise ManifestError(folder, reason) from exc
        except (OSError, ValueError) as exc:
            raise ManifestError(folder, f"cannot read {MANIFEST_NAME}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ManifestError(folder, f"manifest format {found!r}, expected {FORMAT}")
        known = set(cls.__dataclass_fields__)
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ManifestError(folder, f"manifest is missing a field: {exc}") from exc
        for role, name in manifest.files.items():
            if not (folder / name).is_file():
                raise ManifestError(folder, f"{role} file {name} is missing")
        return manifest


def hash_training_data(lines: Iterable[str], *extra: str) -> str:
    """SHA-256 over the training examples (one canonical JSON per line) and ``extra``."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    for item in extra:
        digest.update(item.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
