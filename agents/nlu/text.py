"""Text cleaning and tokenisation shared by training and inference.

Everything here is pure Python (``re``) so that the runtime path stays free of
scikit-learn. Cleaning replaces characters one for one, so a character offset
in the cleaned text is the same offset in the text the user sent: entity spans
always point into the original message.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "MAX_TEXT_CHARS",
    "Token",
    "clean_text",
    "feature_words",
    "tokenize",
]

MAX_TEXT_CHARS = 1000
"""Only the first ``MAX_TEXT_CHARS`` characters of a message are analysed.

Chat messages are short; a 100 KB paste is cut here before any tokenisation so
that its cost is bounded. Entities are only found in the analysed prefix.
"""

# C0/C1 control characters (tab and newline included: they become spaces).
_CONTROL = {cp: " " for cp in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]}
_SURROGATE = re.compile("[\ud800-\udfff]")
_FEATURE_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\d+|[^\W\d_]+|[^\w\s]")


def clean_text(text: str | bytes, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Make any input safe to analyse, keeping character offsets.

    * ``bytes`` are decoded as UTF-8, invalid sequences becoming U+FFFD;
    * the text is cut to ``max_chars`` characters;
    * lone surrogates become U+FFFD and control characters a space (one for one).
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = str(text)
    text = text[:max_chars]
    if not text.isascii():
        text = _SURROGATE.sub("\ufffd", text)
    return text.translate(_CONTROL)


def feature_words(text: str) -> list[str]:
    """Lower-cased word tokens used for the intent classifier's n-gram features."""
    return _FEATURE_WORD.findall(text.lower())


class Token(NamedTuple):
    """A token of a message with its character span (end exclusive).

    A named tuple: a message makes a dozen, and a tuple is built in half the time
    of a frozen dataclass.
    """

    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Split into digit runs, letter runs and single punctuation marks, with offsets.

    ``"£27.50 on 3rd"`` → ``£``, ``27``, ``.``, ``50``, ``on``, ``3``, ``rd``.
    Entity spans are built from these tokens.
    """
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
