"""Component benchmarks: the NLU model and knowledge retrieval on their own.

Thin wrappers: the measuring is done by ``benchmarks.nlu.run_nlu_bench`` and
``benchmarks.kb.run_kb_bench``, owned by those components; this module
only finds their inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.deploy import resolve_model_dir
from benchmarks.kb import build_synthetic_index, run_kb_bench
from benchmarks.nlu import run_nlu_bench
from benchmarks.script import load_script
from kernel.settings import Settings

__all__ = ["DEFAULT_KB_QUERIES", "kb_bench", "nlu_bench", "read_texts", "synthetic_index"]

DEFAULT_KB_QUERIES = (
    "how do I reset my password",
    "why was my card declined",
    "how long does a refund take",
    "can I change my delivery address",
    "what are the fees for international transfers",
    "how do I close my account",
    "where can I see my order history",
    "is my data encrypted",
)


def read_texts(path: Path) -> list[str]:
    """Texts from a file: JSON lines with a ``text`` field, or one text per line."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            value = json.loads(line).get("text")
            if isinstance(value, str) and value.strip():
                texts.append(value)
        else:
            texts.append(line)
    if not texts:
        raise ValueError(f"{path} holds no texts")
    return texts


def nlu_bench(model_dir: Path | None, texts_file: Path | None, seconds: float) -> dict[str, Any]:
    texts = read_texts(texts_file) if texts_file else load_script().all_texts()
    result: dict[str, Any] = run_nlu_bench(resolve_model_dir(model_dir), texts, seconds)
    return result


def synthetic_index(chunks: int) -> Path:
    """A cached synthetic index of ``chunks`` passages under ``PARLEY_DATA_DIR/bench``.

    Built once with ``benchmarks.kb.build_synthetic_index`` (random unit
    vectors: as costly to search as real ones, built in seconds).
    """
    path = (Settings.from_env().data_dir / "bench" / f"kb-synth-{chunks}").resolve()
    if not (path.is_dir() and any(path.iterdir())):
        build_synthetic_index(path, chunks=chunks)
    return path


def kb_bench(
    index_dir: Path | None, queries_file: Path | None, seconds: float, chunks: int = 10_000
) -> dict[str, Any]:
    """``run_kb_bench`` on ``index_dir``, or on a synthetic index of ``chunks`` passages."""
    queries = read_texts(queries_file) if queries_file else list(DEFAULT_KB_QUERIES)
    index = index_dir if index_dir is not None else synthetic_index(chunks)
    result: dict[str, Any] = run_kb_bench(index, queries, seconds)
    return result
