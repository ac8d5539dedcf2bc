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
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from agents.nlu.recognisers.datetimes import MONTHS, WEEKDAYS
from agents.nlu.results import EntityMatch
from agents.nlu.text import Token

__all__ = [
    "CUE_WORDS",
    "MAX_PIECES",
    "TagDecoder",
    "TaggerColumns",
    "TokenParts",
    "TypeScores",
    "assemble_features",
    "encode_bio",
    "shape",
    "token_features",
    "token_parts",
    "type_columns",
    "type_scores",
]

CUE_WORDS = frozenset(
    "from to until till between and since after before on at by in for last next this "
    "ago during starting ending".split()
)
_CUE_WINDOW = 6
MAX_PIECES = 3
T = TypeVar("T")


def shape(word: str) -> str:
    out: list[str] = []
    for c in word[:6]:
        s = "d" if c.isdigit() else "X" if c.isupper() else "x" if c.isalpha() else c
        if not out or out[-1] != s:
            out.append(s)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class TokenParts(Generic[T]):
    """The features a token's text alone decides: its own and those it lends its neighbours.

    :func:`token_parts` gives them as feature strings; inference memoises them per token
    text as tagger columns (:class:`TaggerColumns`), so a known word costs no string work.
    """

    word: str  # lower-cased
    own: tuple[T, ...]  # w=, sh=, p2=, s2=, s3=
    flags: tuple[T, ...]  # month, weekday, cap (those that hold)
    prev1: T  # w-1= (a feature of the next token)
    next1: T  # w+1=
    prev2: T  # w-2=
    next2: T  # w+2=
    pieces: T  # pc=
    pieces_prev: T  # pc-1=
    pieces_next: T  # pc+1=


def token_parts(text: str, n_pieces: Callable[[str], int]) -> TokenParts[str]:
    """The feature strings the token ``text`` decides on its own (see :class:`TokenParts`)."""
    w = text.lower()
    rarity = str(min(MAX_PIECES, n_pieces(w)))
    flags = [("month", w in MONTHS), ("weekday", w in WEEKDAYS), ("cap", text[:1].isupper())]
    return TokenParts(
        w,
        ("w=" + w, "sh=" + shape(text), "p2=" + w[:2], "s2=" + w[-2:], "s3=" + w[-3:]),
        tuple(name for name, on in flags if on),
        "w-1=" + w, "w+1=" + w, "w-2=" + w, "w+2=" + w,
        "pc=" + rarity, "pc-1=" + rarity, "pc+1=" + rarity,
    )


def token_features(
    tokens: Sequence[Token],
    matches: Sequence[EntityMatch],
    n_pieces: Callable[[str], int],
) -> list[list[str]]:
    """Feature strings for every token of a text.

    ``matches`` are the built-in recognisers' matches in the text;
    ``n_pieces`` counts a word's tokenizer pieces
    (:meth:`agents.encoders.wordllama.TokenEncoder.n_pieces`).
    """
    parts = [token_parts(t.text, n_pieces) for t in tokens]
    return assemble_features(tokens, parts, matches, str)


def assemble_features(
    tokens: Sequence[Token],
    parts: Sequence[TokenParts[T]],
    matches: Sequence[EntityMatch],
    name: Callable[[str], T],
) -> list[list[T]]:
    """Every token's features from the tokens' :class:`TokenParts` and the features of
    their context (recogniser cover, cue word, gluing), which ``name`` maps from strings
    to the parts' kind (the string itself, or a tagger column)."""
    n = len(parts)
    cover = _cover(tokens, matches)
    rec, rec_prev, rec_next = (
        [name(prefix + c) for c in cover] if matches else [name(prefix + "O")] * n
        for prefix in ("rec=", "rec-1=", "rec+1=")
    )
    bias, glued = name("b"), name("glued")
    prev1_start, prev2_start = name("w-1=<s>"), name("w-2=<s>")
    next1_end, next2_end = name("w+1=</s>"), name("w+2=</s>")
    rec_start, rec_end = name("rec-1=<s>"), name("rec+1=</s>")
    pieces_start, pieces_end = name("pc-1=<s>"), name("pc+1=</s>")
    no_cue = cue = name("cue=none")
    cue_at = -100
    feats: list[list[T]] = []
    for i, p in enumerate(parts):
        f = [
            bias,
            *p.own,
            parts[i - 1].prev1 if i > 0 else prev1_start,
            parts[i + 1].next1 if i + 1 < n else next1_end,
            parts[i - 2].prev2 if i > 1 else prev2_start,
            parts[i + 2].next2 if i + 2 < n else next2_end,
            rec[i],
            rec_prev[i - 1] if i > 0 else rec_start,
            rec_next[i + 1] if i + 1 < n else rec_end,
            cue if i - cue_at <= _CUE_WINDOW else no_cue,
            p.pieces,
            parts[i - 1].pieces_prev if i > 0 else pieces_start,
            parts[i + 1].pieces_next if i + 1 < n else pieces_end,
            *p.flags,
        ]
        if i > 0 and tokens[i - 1].end == tokens[i].start:
            f.append(glued)
        feats.append(f)
        if p.word in CUE_WORDS:
            cue, cue_at = name("cue=" + p.word), i
    return feats


def _cover(tokens: Sequence[Token], matches: Sequence[EntityMatch]) -> list[str]:
    """Which recogniser match covers each token, and whether first (``amount:B``) or
    not (``amount:I``); ``O`` where none does."""
    cover = ["O"] * len(tokens)
    for match in matches:
        first = True
        for i, tok in enumerate(tokens):
            if tok.start >= match.start and tok.end <= match.end:
                cover[i] = f"{match.entity}:{'B' if first else 'I'}"
                first = False
    return cover


class TaggerColumns:
    """:func:`token_features` of a batch as columns of a trained tagger (features it does
    not know left out), with each token text's columns memoised.

    Two ways to assemble the same columns in the same order (so the model sums them in
    the same order, and the scores are identical to the bit):

    * token by token in Python (:func:`assemble_features` over memoised
      :class:`TokenParts`): cheapest for a message or a few;
    * the whole batch at once in numpy: a token is 21 slots in the same order (the bias,
      five of its own, four lent by neighbours, three of recogniser cover, the cue word,
      three of rarity, three flags and gluing), the lent ones shifted from memoised rows
      (:data:`_MEMO`). About 100 µs of fixed cost, then a quarter of Python's per token,
      so it wins from :attr:`vectorise_from_tokens` tokens on.
    """

    vectorise_from_tokens = 64

    def __init__(
        self, vocab: dict[str, int], n_pieces: Callable[[str], int], max_entries: int = 50_000
    ) -> None:
        self.vocab = vocab
        self.n_pieces = n_pieces
        self.max_entries = max_entries
        self._ids: dict[str, int] = {}
        self._parts: list[TokenParts[int | None]] = []  # None: unknown to the tagger
        self._rows = np.empty((min(max_entries, 1024), len(_MEMO)), np.int64)
        col = self._col
        self._bias, self._glued, self._no_cue = col("b"), col("glued"), col("cue=none")
        self._edges = {name: col(name) for name in (
            "w-1=<s>", "w-2=<s>", "w+1=</s>", "w+2=</s>", "rec-1=<s>", "rec+1=</s>",
            "pc-1=<s>", "pc+1=</s>",
        )}
        self._cover: dict[str, tuple[int, int, int]] = {}

    def _col(self, feature: str) -> int:
        return self.vocab.get(feature, -1)

    def batch(
        self, token_lists: Sequence[Sequence[Token]], found: Sequence[Sequence[EntityMatch]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The known features of every token of the batch as ``(token, column)`` pairs:
        tokens numbered through the batch in order, each token's columns in the order
        :func:`token_features` names them."""
        texts = [t.text for tokens in token_lists for t in tokens]
        known = self._ids
        ids = [known.get(text, -1) for text in texts]
        if -1 in ids:
            ids = self._learn(texts, ids)
        if not texts or len(texts) < self.vectorise_from_tokens:
            return self._assembled(token_lists, found, ids)
        return self._vectorised(token_lists, found, ids)

    def _assembled(
        self, token_lists: Sequence[Sequence[Token]], found: Sequence[Sequence[EntityMatch]],
        ids: list[int],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        cols: list[int] = []
        per_token: list[int] = []
        at = 0
        for tokens, matches in zip(token_lists, found, strict=True):
            parts = [self._parts[i] for i in ids[at : at + len(tokens)]]
            at += len(tokens)
            for feats in assemble_features(tokens, parts, matches, self.vocab.get):
                own = [c for c in feats if c is not None]
                cols += own
                per_token.append(len(own))
        rows = np.repeat(np.arange(len(per_token), dtype=np.int64), per_token)
        return rows, np.array(cols, np.int64)

    def _vectorised(
        self, token_lists: Sequence[Sequence[Token]], found: Sequence[Sequence[EntityMatch]],
        ids: list[int],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        memo, n = self._rows[ids], len(ids)
        lengths = np.array([len(tokens) for tokens in token_lists], np.int64)
        # each token's place in its message: how many tokens come before it, and after
        before = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        after = np.repeat(lengths, lengths) - 1 - before
        edge = self._edges
        f = np.full((n, 21), -1, np.int64)
        f[:, 0] = self._bias
        f[:, 1:6] = memo[:, _OWN]
        f[:, 6] = _shifted(memo[:, _PREV1], 1, before < 1, edge["w-1=<s>"])
        f[:, 7] = _shifted(memo[:, _NEXT1], -1, after < 1, edge["w+1=</s>"])
        f[:, 8] = _shifted(memo[:, _PREV2], 2, before < 2, edge["w-2=<s>"])
        f[:, 9] = _shifted(memo[:, _NEXT2], -2, after < 2, edge["w+2=</s>"])
        rec = self._recogniser_cover(token_lists, found, n)
        f[:, 10] = rec[:, 0]
        f[:, 11] = _shifted(rec[:, 1], 1, before < 1, edge["rec-1=<s>"])
        f[:, 12] = _shifted(rec[:, 2], -1, after < 1, edge["rec+1=</s>"])
        f[:, 13] = self._cues(memo, before)
        f[:, 14] = memo[:, _PIECES]
        f[:, 15] = _shifted(memo[:, _PIECES_PREV], 1, before < 1, edge["pc-1=<s>"])
        f[:, 16] = _shifted(memo[:, _PIECES_NEXT], -1, after < 1, edge["pc+1=</s>"])
        f[:, 17:20] = memo[:, _FLAGS]
        if self._glued >= 0:
            bounds = np.array([(t.start, t.end) for tokens in token_lists for t in tokens])
            glued = np.zeros(n, bool)
            glued[1:] = bounds[1:, 0] == bounds[:-1, 1]
            f[:, 20] = np.where(glued & (before > 0), self._glued, -1)
        known = f >= 0
        return np.nonzero(known)[0], f[known]

    def _learn(self, texts: list[str], ids: list[int]) -> list[int]:
        """Memoise the token texts not known yet (``-1`` in ``ids``); every text's id."""
        known = self._ids
        new = {texts[i] for i, id_ in enumerate(ids) if id_ < 0}
        if len(known) + len(new) > self.max_entries:  # full: start again
            known.clear()
            self._parts.clear()
            new = set(texts)
        if len(known) + len(new) > len(self._rows):
            grown = np.empty((max(2 * len(self._rows), len(known) + len(new)), len(_MEMO)),
                             np.int64)
            grown[: len(known)] = self._rows[: len(known)]
            self._rows = grown
        get = self.vocab.get
        for text in new:
            p = token_parts(text, self.n_pieces)
            parts = TokenParts(
                p.word, tuple(get(f) for f in p.own), tuple(get(f) for f in p.flags),
                get(p.prev1), get(p.next1), get(p.prev2), get(p.next2),
                get(p.pieces), get(p.pieces_prev), get(p.pieces_next),
            )
            row = [
                *parts.own, *parts.flags, *[None] * (3 - len(parts.flags)), parts.pieces,
                parts.prev1, parts.next1, parts.prev2, parts.next2,
                parts.pieces_prev, parts.pieces_next,
                p.word in CUE_WORDS, get("cue=" + p.word),
            ]
            self._rows[len(known)] = [-1 if c is None else c for c in row]
            known[text] = len(known)
            self._parts.append(parts)
        return [known[text] for text in texts]

    def _cues(
        self, memo: npt.NDArray[np.int64], before: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Every token's cue feature: that of the nearest cue word before it in its message
        if at most ``_CUE_WINDOW`` tokens back, else ``cue=none``."""
        n, never = len(memo), -len(memo) - _CUE_WINDOW
        at = np.arange(n)
        last = np.maximum.accumulate(np.where(memo[:, _IS_CUE] == 1, at, never))
        last = np.concatenate([[never], last[:-1]])  # strictly before
        near = (at - last <= _CUE_WINDOW) & (at - last <= before)
        cues: npt.NDArray[np.int64] = np.where(
            near, memo[np.maximum(last, 0), _CUE], self._no_cue
        )
        return cues

    def _recogniser_cover(
        self, token_lists: Sequence[Sequence[Token]], found: Sequence[Sequence[EntityMatch]],
        n: int,
    ) -> npt.NDArray[np.int64]:
        """The ``rec=``, ``rec-1=`` and ``rec+1=`` columns of every token (n x 3)."""
        out = np.empty((n, 3), np.int64)
        out[:] = self._cover_columns("O")
        at = 0
        for tokens, matches in zip(token_lists, found, strict=True):
            if matches:
                for i, cover in enumerate(_cover(tokens, matches)):
                    if cover != "O":
                        out[at + i] = self._cover_columns(cover)
            at += len(tokens)
        return out

    def _cover_columns(self, cover: str) -> tuple[int, int, int]:
        cols = self._cover.get(cover)
        if cols is None:
            cols = self._cover[cover] = (
                self._col("rec=" + cover), self._col("rec-1=" + cover),
                self._col("rec+1=" + cover),
            )
        return cols


_MEMO = (
    "own0", "own1", "own2", "own3", "own4", "flag0", "flag1", "flag2", "pieces",
    "prev1", "next1", "prev2", "next2", "pieces_prev", "pieces_next", "is_cue", "cue",
)
"""A memoised row: a token text's columns (``-1`` where the tagger lacks one), the flags
that hold first; whether it is a cue word, and the column of that cue."""
_OWN, _FLAGS = slice(0, 5), slice(5, 8)
_PIECES, _PREV1, _NEXT1, _PREV2, _NEXT2, _PIECES_PREV, _PIECES_NEXT, _IS_CUE, _CUE = range(8, 17)


def _shifted(
    values: npt.NDArray[np.int64], by: int, off_edge: npt.NDArray[np.bool_], edge: int
) -> npt.NDArray[np.int64]:
    """``values`` moved ``by`` places (to later tokens if positive), ``edge`` where the
    neighbour would lie outside the token's message."""
    moved = np.roll(values, by)
    moved[off_edge] = edge
    return moved


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


class TypeScores:
    """Per-type token scores from the tag scores: the best of ``B-x`` and ``I-x``."""

    def __init__(self, tags: Sequence[str]) -> None:
        columns = type_columns(tags)
        self.labels = tuple(columns)
        self.position = {label: i for i, label in enumerate(self.labels)}
        self._order = np.array([c for cols in columns.values() for c in cols], np.int64)
        sizes = [len(cols) for cols in columns.values()]
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def of(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Tokens x types."""
        out: npt.NDArray[np.float32] = np.maximum.reduceat(
            scores[:, self._order], self._starts, axis=1
        )
        return out


@lru_cache(maxsize=16)
def type_scores(tags: tuple[str, ...]) -> TypeScores:
    return TypeScores(tags)


def type_columns(tags: Sequence[str]) -> dict[str, list[int]]:
    """The tag columns (``B-x``, ``I-x``) of every entity type, in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, tag in enumerate(tags):
        if tag != "O":
            out.setdefault(tag[2:], []).append(i)
    return out


class TagDecoder:
    """Per-token tag scores → ``(first token, last token + 1, entity)`` runs.

    Segments first, then types: a span is a maximal run of tokens whose best
    tag is not ``O`` (a new span also starts where the best tag is ``B-x`` and
    the previous token's best tag is of another type); its type is the entity
    whose score summed over the run is highest, a token's score for a type
    being the better of its ``B-``/``I-`` scores. Typing the whole run at once
    avoids entities split by flickering types.
    """

    def __init__(self, tags: Sequence[str]) -> None:
        self.tags = tuple(tags)
        self.types = type_scores(self.tags)
        self._outside = self.tags.index("O") if "O" in self.tags else -1
        self._begins = [t.startswith("B-") for t in self.tags]
        self._type_of = [t[2:] for t in self.tags]

    def runs(self, scores: npt.NDArray[np.float32]) -> list[tuple[int, int, str]]:
        """The runs of one message (``scores``: its tokens x tags)."""
        return self.runs_batch(scores, [len(scores)])[0]

    def runs_batch(
        self, scores: npt.NDArray[np.float32], lengths: Sequence[int]
    ) -> list[list[tuple[int, int, str]]]:
        """The runs of each message of a batch whose tokens, ``lengths[i]`` for message
        ``i``, are the rows of ``scores`` in order: two numpy calls for the whole batch."""
        tags = np.argmax(scores, axis=1)
        if not (tags != self._outside).any():  # most messages have no entity
            return [[] for _ in lengths]
        best = tags.tolist()
        by_type = self.types.of(scores)
        out: list[list[tuple[int, int, str]]] = []
        end = 0
        for n in lengths:
            start, end = end, end + n
            out.append(self._decode(best[start:end], by_type[start:end]) if n else [])
        return out

    def _decode(
        self, best: list[int], by_type: npt.NDArray[np.float32]
    ) -> list[tuple[int, int, str]]:
        outside, begins, type_of = self._outside, self._begins, self._type_of
        runs: list[tuple[int, int]] = []
        start = -1
        for i, k in enumerate(best):
            if k == outside:
                if start >= 0:
                    runs.append((start, i))
                    start = -1
            elif start < 0:
                start = i
            elif begins[k] and type_of[best[i - 1]] != type_of[k]:
                runs.append((start, i))
                start = i
        if start >= 0:
            runs.append((start, len(best)))
        labels = self.types.labels
        return [(a, b, labels[int(by_type[a:b].sum(axis=0).argmax())]) for a, b in runs]
