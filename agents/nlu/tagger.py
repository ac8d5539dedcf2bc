"""Entity tagger: token features and BIO decoding (shared by training and inference).

Each token gets sparse binary features (the word, its shape, affixes, the words
around it, the nearest cue word before it such as ``from``/``until``, and which
built-in recogniser covers it). A linear model (``tagger.onnx``) scores the BIO
tags; decoding repairs invalid sequences (an ``I-x`` that follows neither
``B-x`` nor ``I-x`` starts a new entity) and maps tokens back to character spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from agents.nlu.recognisers import Recognisers
from agents.nlu.recognisers.datetimes import MONTHS, WEEKDAYS
from agents.nlu.text import Token, tokenize

__all__ = ["CUE_WORDS", "decode_bio", "encode_bio", "token_features", "tokens_for"]

CUE_WORDS = frozenset(
    "from to until till between and since after before on at by in for last next this "
    "ago during starting ending".split()
)
_CUE_WINDOW = 4


def _shape(word: str) -> str:
    out = []
    for c in word[:6]:
        s = "d" if c.isdigit() else "X" if c.isupper() else "x" if c.isalpha() else c
        if not out or out[-1] != s:
            out.append(s)
    return "".join(out)


def tokens_for(text: str) -> list[Token]:
    return tokenize(text)


def token_features(
    text: str, tokens: Sequence[Token], recognisers: Recognisers, reference: datetime
) -> list[list[str]]:
    """Feature strings for every token of ``text``."""
    cover: dict[int, str] = {}
    for match in recognisers.find(text, reference):
        first = True
        for i, tok in enumerate(tokens):
            if tok.start >= match.start and tok.end <= match.end:
                cover[i] = f"{match.entity}:{'B' if first else 'I'}"
                first = False
    words = [t.text.lower() for t in tokens]
    n = len(words)
    feats: list[list[str]] = []
    cue = "none"
    cue_at = -100
    for i, w in enumerate(words):
        f = [
            "b",
            "w=" + w,
            "sh=" + _shape(tokens[i].text),
            "p2=" + w[:2],
            "s2=" + w[-2:],
            "s3=" + w[-3:],
            "w-1=" + (words[i - 1] if i > 0 else "<s>"),
            "w+1=" + (words[i + 1] if i + 1 < n else "</s>"),
            "w-2=" + (words[i - 2] if i > 1 else "<s>"),
            "w+2=" + (words[i + 2] if i + 2 < n else "</s>"),
            "w-1w=" + (words[i - 1] if i > 0 else "<s>") + "|" + w,
            "ww+1=" + w + "|" + (words[i + 1] if i + 1 < n else "</s>"),
            "rec=" + cover.get(i, "O"),
            "rec-1=" + (cover.get(i - 1, "O") if i > 0 else "<s>"),
            "rec+1=" + (cover.get(i + 1, "O") if i + 1 < n else "</s>"),
            "cue=" + (cue if i - cue_at <= _CUE_WINDOW else "none"),
        ]
        if w in MONTHS:
            f.append("month")
        if w in WEEKDAYS:
            f.append("weekday")
        if tokens[i].text[:1].isupper():
            f.append("cap")
        if i > 0 and tokens[i - 1].end == tokens[i].start:
            f.append("glued")
        feats.append(f)
        if w in CUE_WORDS:
            cue, cue_at = w, i
    return feats


def encode_bio(
    tokens: Sequence[Token], spans: Sequence[tuple[int, int, str]]
) -> list[str]:
    """BIO tags of ``tokens`` for character spans (a token overlapping a span is inside)."""
    tags = ["O"] * len(tokens)
    for start, end, entity in spans:
        first = True
        for i, tok in enumerate(tokens):
            if tok.end > start and tok.start < end and tags[i] == "O":
                tags[i] = ("B-" if first else "I-") + entity
                first = False
    return tags


def decode_bio(
    tokens: Sequence[Token],
    scores: npt.NDArray[np.float32],
    tags: Sequence[str],
) -> list[tuple[int, int, str]]:
    """Greedy decoding of per-token tag scores into (start, end, entity) spans."""
    best = np.argmax(scores, axis=1) if len(tokens) else np.zeros(0, np.int64)
    spans: list[tuple[int, int, str]] = []
    current: list[int] | None = None  # [start, end] character offsets
    current_type = ""
    for i, k in enumerate(best.tolist()):
        tag = tags[k]
        if tag == "O":
            if current is not None:
                spans.append((current[0], current[1], current_type))
                current = None
            continue
        prefix, entity = tag[:1], tag[2:]
        if prefix == "I" and current is not None and entity == current_type:
            current[1] = tokens[i].end
            continue
        if current is not None:
            spans.append((current[0], current[1], current_type))
        current, current_type = [tokens[i].start, tokens[i].end], entity
    if current is not None:
        spans.append((current[0], current[1], current_type))
    return spans
