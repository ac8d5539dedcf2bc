"""Entity tagger: token features and BIO decoding (shared by training and inference).

Each token gets sparse binary features (the word, its shape, affixes, the words
around it, the nearest cue word before it such as ``from``/``until``, which
built-in recogniser covers it, and how rare it and its neighbours are: the
number of wordllama tokenizer pieces, 1 for a common word, which separates
``to kawamoto`` (4 pieces) from ``to card`` (1)). A linear model
(``tagger.onnx``) scores the BIO tags; decoding repairs invalid sequences (an
``I-x`` that follows neither ``B-x`` nor ``I-x`` starts a new entity) and maps
tokens back to character spans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from agents.nlu.recognisers.datetimes import MONTHS, WEEKDAYS
from agents.nlu.results import EntityMatch
from agents.nlu.text import Token, tokenize

__all__ = [
    "CUE_WORDS",
    "MAX_PIECES",
    "decode_runs",
    "encode_bio",
    "shape",
    "token_features",
    "tokens_for",
]

CUE_WORDS = frozenset(
    "from to until till between and since after before on at by in for last next this "
    "ago during starting ending".split()
)
_CUE_WINDOW = 6
MAX_PIECES = 3


def shape(word: str) -> str:
    out: list[str] = []
    for c in word[:6]:
        s = "d" if c.isdigit() else "X" if c.isupper() else "x" if c.isalpha() else c
        if not out or out[-1] != s:
            out.append(s)
    return "".join(out)


def tokens_for(text: str) -> list[Token]:
    return tokenize(text)


def token_features(
    tokens: Sequence[Token],
    matches: Sequence[EntityMatch],
    n_pieces: Callable[[str], int],
) -> list[list[str]]:
    """Feature strings for every token of a text.

    ``matches`` are the built-in recognisers' matches in the text;
    ``n_pieces`` counts a word's tokenizer pieces
    (:meth:`agents.nlu.embeddings.TokenEncoder.n_pieces`).
    """
    cover: dict[int, str] = {}
    for match in matches:
        first = True
        for i, tok in enumerate(tokens):
            if tok.start >= match.start and tok.end <= match.end:
                cover[i] = f"{match.entity}:{'B' if first else 'I'}"
                first = False
    words = [t.text.lower() for t in tokens]
    n = len(words)
    rarity = [str(min(MAX_PIECES, n_pieces(w))) for w in words]
    feats: list[list[str]] = []
    cue = "none"
    cue_at = -100
    for i, w in enumerate(words):
        f = [
            "b",
            "w=" + w,
            "sh=" + shape(tokens[i].text),
            "p2=" + w[:2],
            "s2=" + w[-2:],
            "s3=" + w[-3:],
            "w-1=" + (words[i - 1] if i > 0 else "<s>"),
            "w+1=" + (words[i + 1] if i + 1 < n else "</s>"),
            "w-2=" + (words[i - 2] if i > 1 else "<s>"),
            "w+2=" + (words[i + 2] if i + 2 < n else "</s>"),
            "rec=" + cover.get(i, "O"),
            "rec-1=" + (cover.get(i - 1, "O") if i > 0 else "<s>"),
            "rec+1=" + (cover.get(i + 1, "O") if i + 1 < n else "</s>"),
            "cue=" + (cue if i - cue_at <= _CUE_WINDOW else "none"),
            "pc=" + rarity[i],
            "pc-1=" + (rarity[i - 1] if i > 0 else "<s>"),
            "pc+1=" + (rarity[i + 1] if i + 1 < n else "</s>"),
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


def decode_runs(
    scores: npt.NDArray[np.float32], tags: Sequence[str]
) -> list[tuple[int, int, str]]:
    """Decode per-token tag scores into ``(first token, last token + 1, entity)`` runs.

    Segments first, then types: a span is a maximal run of tokens whose best
    tag is not ``O`` (a new span also starts where the best tag is ``B-`` and the
    previous token's score for that ``B-`` is lower than for continuing); its
    type is the entity with the highest summed ``B-``/``I-`` score over the run.
    Typing the whole run at once avoids entities split by flickering types.
    """
    if not len(scores):
        return []
    best = np.argmax(scores, axis=1).tolist()
    outside = tags.index("O") if "O" in tags else -1
    entities = sorted({t[2:] for t in tags if t != "O"})
    columns = {e: [i for i, t in enumerate(tags) if t[2:] == e] for e in entities}
    runs: list[tuple[int, int]] = []
    start = -1
    for i, k in enumerate(best):
        inside = k != outside
        if inside and start >= 0 and tags[k].startswith("B-") and i > start:
            prev_type = tags[best[i - 1]][2:]
            if prev_type != tags[k][2:]:
                runs.append((start, i))
                start = i
                continue
        if inside and start < 0:
            start = i
        elif not inside and start >= 0:
            runs.append((start, i))
            start = -1
    if start >= 0:
        runs.append((start, len(best)))
    spans = []
    for a, b in runs:
        seg = scores[a:b]
        totals = {e: float(seg[:, cols].max(axis=1).sum()) for e, cols in columns.items()}
        spans.append((a, b, max(totals, key=lambda e: totals[e])))
    return spans
