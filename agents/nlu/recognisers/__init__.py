"""Built-in entity recognisers: rules that need no training.

==========  ==========================================  =====================
entity      finds                                       value
==========  ==========================================  =====================
amount      ``£27``, ``125.50 EUR``, ``400 dollars``     ``125.50 EUR``
date        ``tomorrow``, ``next friday``, ``3rd of      ISO date, relative to
            march``, ``05/03/2024``, ``in 7 days``       the reference time
time        ``25 to 7 p.m.``, ``9:55``, ``5pm``, ``noon``  ``HH:MM``
number      ``42``, ``1,250.5``, ``twelve``              ``42``, ``1250.5``
email       ``Ann@Example.com``                          lower-cased
phone       ``+44 20 7946 0958``, ``020 7946 0958``      E.164 when possible
<id name>   configurable regexes (``order_id`` ...)     upper-cased match
==========  ==========================================  =====================

On overlap the more specific recogniser wins (ids, email, phone, amount,
date/time, then number), and a longer match beats a shorter one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.nlu.recognisers.contact import (
    compile_id_patterns,
    find_emails,
    find_ids,
    find_phones,
)
from agents.nlu.recognisers.datetimes import (
    WEEKDAYS,
    find_dates,
    find_times,
    parse_date,
    parse_time,
)
from agents.nlu.recognisers.numbers import (
    NUMBER_WORDS,
    find_amounts,
    find_numbers,
    parse_amount,
    parse_number,
)
from agents.nlu.results import EntityMatch

__all__ = [
    "DEFAULT_ID_PATTERNS",
    "RecogniserConfig",
    "Recognisers",
    "normalise_value",
]

DEFAULT_ID_PATTERNS: dict[str, str] = {
    "order_id": r"\b(?:order\s*(?:number|no\.?|id)?\s*#?\s*)([A-Z]{2,3}-?\d{5,10})\b",
    "account_id": r"\b(?:account\s*(?:number|no\.?|id)?\s*#?\s*)(\d{8,12})\b",
}
"""Default id patterns: group 1 is the id (``order AB-123456``, ``account no 12345678``)."""

_DIGIT = re.compile(r"\d")
_DATE_WORDS = frozenset(
    ["today", "tonight", "tomorrow", "yesterday", "night", "ago"]
    + [w for w in WEEKDAYS if w.endswith("day")]
)
_TIME_WORDS = frozenset(["noon", "midday", "midnight"])
_NUMBER_WORDS = frozenset(NUMBER_WORDS)
_TRIGGER_WORD = re.compile(
    "(?<![a-z])(?:{})(?![a-z])".format(
        "|".join(sorted(_DATE_WORDS | _TIME_WORDS | _NUMBER_WORDS, key=len, reverse=True))
    )
)
"""Whole lower-case words that make the date, time or number recognisers worth running."""
_PRIORITY = {"email": 1, "phone": 2, "amount": 3, "date": 4, "time": 4, "number": 9}


@dataclass(frozen=True)
class RecogniserConfig:
    """Settings of the built-in recognisers, stored in the model's manifest."""

    id_patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ID_PATTERNS))
    default_country_code: str = ""
    enabled: tuple[str, ...] = ("amount", "date", "time", "number", "email", "phone", "ids")

    def __post_init__(self) -> None:
        if self.default_country_code and not self.default_country_code.isdigit():
            raise ValueError(
                f"default_country_code must be digits without '+', "
                f"got {self.default_country_code!r}"
            )
        compile_id_patterns(self.id_patterns)  # fail early on a bad regex

    def to_json(self) -> dict[str, Any]:
        return {
            "id_patterns": dict(self.id_patterns),
            "default_country_code": self.default_country_code,
            "enabled": list(self.enabled),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecogniserConfig:
        return cls(
            id_patterns=dict(data.get("id_patterns", DEFAULT_ID_PATTERNS)),
            default_country_code=str(data.get("default_country_code", "")),
            enabled=tuple(data.get("enabled", cls.enabled)),
        )


class Recognisers:
    """Runs the enabled recognisers over a text and resolves overlaps."""

    def __init__(self, config: RecogniserConfig | None = None) -> None:
        self.config = config or RecogniserConfig()
        self._ids: dict[str, re.Pattern[str]] = compile_id_patterns(self.config.id_patterns)
        self._enabled = frozenset(self.config.enabled)

    def find(self, text: str, reference: datetime) -> list[EntityMatch]:
        found: list[tuple[int, EntityMatch]] = []
        on = self._enabled

        def add(kind: str, items: list[tuple[int, int, str]], priority: int) -> None:
            for start, end, value in items:
                found.append(
                    (priority, EntityMatch(kind, start, end, text[start:end], value, kind))
                )

        if "ids" in on:
            for name, start, end, value in find_ids(text, self._ids):
                found.append((0, EntityMatch(name, start, end, text[start:end], value, "ids")))
        if "email" in on:
            add("email", find_emails(text), _PRIORITY["email"])
        # Cheap triggers first: most chat messages have no digit and no date word.
        has_digit = _DIGIT.search(text) is not None
        words = set(_TRIGGER_WORD.findall(text.lower()))
        if has_digit and "phone" in on:
            add("phone", find_phones(text, self.config.default_country_code), _PRIORITY["phone"])
        if has_digit and "amount" in on:
            add("amount", find_amounts(text), _PRIORITY["amount"])
        if "date" in on and (has_digit or not words.isdisjoint(_DATE_WORDS)):
            add("date", find_dates(text, reference), _PRIORITY["date"])
        if "time" in on and (has_digit or not words.isdisjoint(_TIME_WORDS)):
            add("time", find_times(text), _PRIORITY["time"])
        has_number_word = not words.isdisjoint(_NUMBER_WORDS)
        if "number" in on and (has_digit or has_number_word):
            numbers = find_numbers(text, digits=has_digit, words=has_number_word)
            add("number", numbers, _PRIORITY["number"])
        return resolve_overlaps(found)


def resolve_overlaps(found: list[tuple[int, EntityMatch]]) -> list[EntityMatch]:
    """Keep the best non-overlapping matches: lower priority number, then longer."""
    kept: list[EntityMatch] = []
    for _, match in sorted(found, key=lambda f: (f[0], f[1].start - f[1].end, f[1].start)):
        if all(match.end <= k.start or match.start >= k.end for k in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: (m.start, m.end))


def normalise_value(entity: str, text: str, reference: datetime) -> str:
    """Normalised value of a span the trained tagger found, by the entity's name.

    Names containing ``date``, ``time``, ``amount``/``money`` or ``number`` are parsed
    by the matching recogniser; anything else (or what does not parse) is the
    text itself, whitespace-collapsed.
    """
    name = entity.lower()
    value: str | None = None
    if "date" in name:
        value = parse_date(text, reference)
    elif "time" in name and "period" not in name:
        value = parse_time(text)
    elif "amount" in name or "money" in name:
        value = parse_amount(text) or parse_number(text)
    elif "number" in name:
        value = parse_number(text)
    return value if value is not None else " ".join(text.split())
