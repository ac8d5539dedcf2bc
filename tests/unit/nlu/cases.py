"""Inputs shared by the NLU unit tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import numpy as np

TAGS = ("O", "B-date", "I-date", "B-date_to", "I-date_to", "B-person", "I-person")
"""Tagger tags for hand-made score tables: two related date types and a person."""

CLEAR_INTENTS = [
    ("hello there", "greet"),
    ("I lost my credit card", "card_lost"),
    ("where is my order AB-123456", "order_status"),
    ("I want to speak to a real person", "human_handoff"),
    ("what is the capital of spain", "oos"),
]
"""Demo-domain messages any model trained on the demo data must tell apart."""


def tag_scores(rows: list[dict[str, float]]) -> np.ndarray:
    """Tokens x :data:`TAGS` scores: -1 except where a row names a tag."""
    out = np.full((len(rows), len(TAGS)), -1.0, np.float32)
    for i, row in enumerate(rows):
        for tag, value in row.items():
            out[i, TAGS.index(tag)] = value
    return out


def modules_loaded_by_inference(
    model_dir: Path, calls: str, modules: set[str], timeout: float = 60
) -> list[str]:
    """Which of the top-level ``modules`` a fresh process has imported after loading
    ``model_dir`` and running ``calls`` (Python statements on the model ``m``)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from agents.nlu.model import NLUModel\n"
        f"m = NLUModel.load(Path({str(model_dir)!r}))\n"
        f"{calls}\n"
        f"print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in {modules!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, check=True)
    return [name for name in proc.stdout.strip().split(",") if name]


def write_demo_slice(
    path: Path, keep: Collection[str] = ("greet", "goodbye", "card_lost", "order_status", "oos")
) -> Path:
    """The demo examples of the intents ``keep`` (by default five, oos among them) as a
    JSON-lines training file at ``path``."""
    from agents.nlu.data import load_examples
    from examples import DEMO

    rows = [{"text": e.text, "intent": e.intent,
             "entities": [{"start": s.start, "end": s.end, "entity": s.entity}
                          for s in e.entities or ()]}
            for e in load_examples([DEMO.nlu]) if e.intent in keep]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path
