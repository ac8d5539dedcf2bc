"""Turning what the user said into typed slot values.

Three sources, most reliable first (Rasa's greedy ``from_text`` mappings, #10219, and
slots set by unrelated entities, #10123, are what this order avoids):

1. the NLU's entities (the ChatUnderstood payload's ``{entity, start, end, text, value,
   source}``) whose name the slot lists in ``entities``, and the slot's own ``extract``
   regexes, its ``pattern`` and its categorical values and synonyms found in the text —
   only for the slots of the flow that is running or starting (:func:`extract_slots`);
2. the whole message as the answer to the slot the bot just asked for: a bare "Anna"
   fills ``recipient``, "yes" a boolean, "300" an amount in the bot's default currency
   (:func:`answer_value`);
3. nothing else: a value that does not parse for its type is not set.

Values are JSON: ``number`` an int or float; ``amount`` ``{"value": 50, "currency":
"EUR"}``; ``datetime`` an ISO date ``YYYY-MM-DD``, time ``HH:MM`` or both
``YYYY-MM-DDTHH:MM``; ``boolean`` true/false; ``categorical`` the canonical value;
``pattern`` the match (its group when it has one); ``text`` the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from agents.dialogue.domain import SlotSpec
from agents.nlu.recognisers.datetimes import find_dates, find_times
from agents.nlu.recognisers.numbers import find_amounts

__all__ = [
    "answer_value",
    "display_value",
    "extract_slots",
    "parse_amount",
    "parse_boolean",
    "parse_categorical",
    "parse_datetime",
    "parse_number",
    "parse_pattern",
    "parse_text",
    "value_from_entity",
]

JSON = Any

YES = frozenset("yes y yeah yep yup sure ok okay correct right affirmative absolutely definitely "
                "certainly please confirm confirmed true agreed indeed".split())
NO = frozenset("no n nope nah never negative wrong incorrect false cancel not don't dont "
               "stop".split())
_YES_PHRASES = ("go ahead", "do it", "that's right", "thats right", "sounds good", "of course",
                "that's correct", "yes please")
_NO_PHRASES = ("no thanks", "no thank you", "don't do it", "do not", "not really")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "a": 1, "an": 1,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "k": 1000}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES, "and"], key=len, reverse=True))
_WORD_RUN = re.compile(rf"\b(?:(?:{_NUMBER_WORD})(?:[\s-]+|$|\b))+", re.IGNORECASE)
_DIGITS = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?[kK]\b)?")
_TEXT_PREFIX = re.compile(r"^(?:it'?s|it is|that'?s|that is|to|for|its|call it|"
                          r"name is|called)\s+", re.IGNORECASE)


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _words_to_number(words: str) -> int | None:
    total, current, seen = 0, 0, False
    for word in re.split(r"[\s-]+", words.lower().strip()):
        if not word or word == "and":
            continue
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word in _SCALES:
            scale = _SCALES[word]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * scale
                current = 0
        else:
            return None
        seen = True
    if not seen:
        return None
    return total + current


def parse_number(text: str) -> int | float | None:
    """The first number in ``text``: ``"300"``, ``"1,200.50"``, ``"three hundred"``,
    ``"2k"``; None when there is none."""
    m = _DIGITS.search(text)
    if m is not None:
        raw = m.group().replace(",", "").replace(" ", "")
        scale = 1
        if raw[-1] in "kK":
            raw, scale = raw[:-1], 1000
        try:
            return _number(Decimal(raw) * scale)
        except InvalidOperation:
            return None
    for run in _WORD_RUN.finditer(text):
        words = run.group().strip(" -")
        if words.lower() in ("a", "an", "and", "k"):
            continue
        value = _words_to_number(words)
        if value is not None:
            return value
    return None


def parse_amount(text: str, default_currency: str, *, bare_number: bool = True) -> JSON:
    """``{"value": 50, "currency": "EUR"}`` from "50 euros", "€50", "$1,200", "EUR 12.5";
    a number without a currency ("50", "fifty") takes ``default_currency`` when
    ``bare_number`` (the message answers the amount question)."""
    found = find_amounts(text)
    if found:
        number, currency = found[0][2].split(" ")
        return {"value": _number(Decimal(number)), "currency": currency}
    if bare_number:
        value = parse_number(text)
        if value is not None:
            return {"value": value, "currency": default_currency}
    return None


def _normal(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def parse_boolean(text: str) -> bool | None:
    """True for yes/yeah/correct/..., False for no/nope/...; None when it is neither (or
    both: "yes, no")."""
    low = _normal(text)
    if any(p in low for p in _NO_PHRASES):
        return False
    if any(p in low for p in _YES_PHRASES):
        return True
    words = set(re.findall(r"[a-z']+", low))
    yes, no = bool(words & YES), bool(words & NO)
    if yes != no:
        return yes
    return None


@lru_cache(maxsize=1024)
def _categorical_pattern(options: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    alternatives = sorted({phrase for phrase, _ in options}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(a) for a in alternatives) + r")(?!\w)")


def _options(slot: SlotSpec) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for value, synonyms in slot.values.items():
        out.append((_normal(value), value))
        out.extend((_normal(s), value) for s in synonyms)
    return tuple(out)


def parse_categorical(slot: SlotSpec, text: str) -> str | None:
    """The canonical value whose name or synonym occurs in ``text`` (case and accents
    ignored, whole words; the longest mention wins)."""
    options = _options(slot)
    if not options:
        return None
    m = _categorical_pattern(options).search(_normal(text))
    if m is None:
        return None
    lookup = dict(options)
    return lookup.get(m.group(1))


@lru_cache(maxsize=256)
def _compiled(rx: str) -> re.Pattern[str]:
    return re.compile(rx)


def parse_pattern(rx: str, text: str) -> str | None:
    """The first match of ``rx`` in ``text`` (its capture group when it has one)."""
    m = _compiled(rx).search(text)
    if m is None:
        return None
    value = m.group(1) if m.re.groups else m.group()
    return value.strip() if value else None


def parse_datetime(text: str, now: datetime) -> str | None:
    """ISO date, time, or date and time, resolved against ``now`` (the message's time)."""
    dates = find_dates(text, now)
    times = find_times(text)
    if dates and times:
        return f"{dates[0][2]}T{times[0][2]}"
    if dates:
        return dates[0][2]
    if times:
        return times[0][2]
    return None


def parse_text(text: str) -> str | None:
    """The message as a text answer, without filler ("it's Anna" → "Anna") and final
    punctuation; None when nothing is left or it is too long to be one value."""
    value = " ".join(text.split()).strip(" .!?,;:")
    value = _TEXT_PREFIX.sub("", value).strip(" .!?,;:\"'")
    if not value or len(value) > 200:
        return None
    return value


def _typed(slot: SlotSpec, text: str, *, currency: str, now: datetime, answer: bool) -> JSON:
    kind = slot.type
    if kind == "number":
        return parse_number(text)
    if kind == "amount":
        return parse_amount(text, currency, bare_number=answer)
    if kind == "datetime":
        return parse_datetime(text, now)
    if kind == "boolean":
        return parse_boolean(text)
    if kind == "categorical":
        return parse_categorical(slot, text)
    if kind == "pattern":
        return parse_pattern(slot.pattern or r".+", text)
    return parse_text(text) if answer else (" ".join(text.split()) or None)


def value_from_entity(slot: SlotSpec, entity: Mapping[str, Any], *, currency: str,
                      now: datetime) -> JSON:
    """The slot's value from one NLU entity, or None when it does not fit the type."""
    text = str(entity.get("text") or "")
    value = str(entity.get("value") or "") or text
    name = str(entity.get("entity") or "")
    if slot.type == "amount":
        if name == "number" or (name != "amount" and parse_amount(value, currency,
                                                                   bare_number=False) is None):
            return parse_amount(value, currency, bare_number=True)
        return parse_amount(value, currency, bare_number=False) or parse_amount(
            text, currency, bare_number=True)
    if slot.type == "categorical":
        return parse_categorical(slot, value) or parse_categorical(slot, text)
    if slot.type == "pattern":
        return parse_pattern(slot.pattern or r".+", value) or parse_pattern(
            slot.pattern or r".+", text)
    if slot.type == "text":
        return " ".join(text.split()) or None
    return _typed(slot, value, currency=currency, now=now, answer=True) if value else None


def extract_slots(slots: Iterable[SlotSpec], text: str, entities: Sequence[Mapping[str, Any]],
                  *, currency: str, now: datetime) -> dict[str, JSON]:
    """Values for ``slots`` from the message's entities, extract regexes, patterns and
    categorical mentions (never from the bare text: that is :func:`answer_value`)."""
    found: dict[str, JSON] = {}
    for slot in slots:
        value: JSON = None
        for entity in entities:
            if entity.get("entity") in slot.entities:
                value = value_from_entity(slot, entity, currency=currency, now=now)
                if value is not None:
                    break
        if value is None:
            for rx in slot.extract:
                raw = parse_pattern(rx, text)
                if raw is not None:
                    value = _typed(slot, raw, currency=currency, now=now, answer=True)
                    if value is not None:
                        break
        if value is None and slot.type == "pattern" and slot.pattern:
            value = parse_pattern(slot.pattern, text)
        if value is None and slot.type == "categorical":
            value = parse_categorical(slot, text)
        if value is not None:
            found[slot.name] = value
    return found


def answer_value(slot: SlotSpec, text: str, *, currency: str, now: datetime,
                 intent: str | None = None, affirm: Iterable[str] = (),
                 deny: Iterable[str] = ()) -> JSON:
    """The whole message as the answer to the bot's question for ``slot``; a boolean also
    takes an affirm or deny intent."""
    if not slot.from_answer:
        return None
    value = _typed(slot, text, currency=currency, now=now, answer=True)
    if value is None and slot.type == "boolean" and intent:
        if intent in set(affirm):
            return True
        if intent in set(deny):
            return False
    return value


def display_value(value: JSON) -> str:
    """A slot value as the bot says it: ``{"value": 50, "currency": "EUR"}`` → "50 EUR",
    True → "yes"."""
    if isinstance(value, Mapping) and "value" in value:
        amount = value["value"]
        shown = f"{amount:,.2f}" if isinstance(amount, float) else f"{amount:,}" \
            if isinstance(amount, int) else str(amount)
        return f"{shown} {value.get('currency', '')}".strip()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    return str(value)
