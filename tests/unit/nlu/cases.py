"""Inputs shared by the NLU unit tests."""

from __future__ import annotations

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
