"""Numbers and amounts of money."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "CURRENCY_CODES",
    "NUMBER_WORDS",
    "find_amounts",
    "find_numbers",
    "parse_amount",
    "parse_number",
]

NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12,
}
"""Number words recognised on their own ("one" is left out: it is mostly a pronoun)."""

_SYMBOLS = {"£": "GBP", "$": "USD", "€": "EUR", "¥": "JPY", "₹": "INR"}
_WORDS = {
    "pound": "GBP", "pounds": "GBP", "quid": "GBP", "sterling": "GBP",
    "dollar": "USD", "dollars": "USD", "bucks": "USD",
    "euro": "EUR", "euros": "EUR", "yen": "JPY", "franc": "CHF", "francs": "CHF",
    "rupee": "INR", "rupees": "INR",
}
CURRENCY_CODES = frozenset(
    "EUR USD GBP JPY CHF CAD AUD NZD INR CNY SEK NOK DKK PLN CZK HUF RON TRY ZAR MXN BRL".split()
)

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SYM = "|".join(re.escape(s) for s in _SYMBOLS)
_CUR = "|".join(sorted([*_WORDS, *CURRENCY_CODES], key=len, reverse=True))
_AMOUNT = re.compile(
    rf"(?P<s1>{_SYM})\s?(?P<n1>{_NUM})"
    rf"|(?<![\w.,])(?P<n2>{_NUM})\s?(?:(?P<s2>{_SYM})|(?P<c2>{_CUR})\b)"
    rf"|\b(?P<c3>{'|'.join(sorted(CURRENCY_CODES))})\s?(?P<n3>{_NUM})",
    re.IGNORECASE,
)
_DIGITS = re.compile(rf"(?<![\w.,])(?:{_NUM})(?![\w]|[.,]\d)")
_WORD_NUMBER = re.compile(rf"\b(?:{'|'.join(NUMBER_WORDS)})\b", re.IGNORECASE)


def parse_number(text: str) -> str | None:
    """``"1,250.5"`` → ``"1250.5"``; ``"twelve"`` → ``"12"``; None when not a number."""
    word = NUMBER_WORDS.get(text.strip().lower())
    if word is not None:
        return str(word)
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return format(value.normalize(), "f") if value == value.to_integral() else str(value)


def _currency(token: str) -> str:
    if token in _SYMBOLS:
        return _SYMBOLS[token]
    low = token.lower()
    return _WORDS.get(low, low.upper())


def _amount_value(number: str, currency: str) -> str | None:
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None
    return f"{value:.2f} {currency}"


def find_amounts(text: str) -> list[tuple[int, int, str]]:
    """(start, end, value) for every amount with a currency, e.g. ``"125.50 EUR"``."""
    found = []
    for m in _AMOUNT.finditer(text):
        number = m.group("n1") or m.group("n2") or m.group("n3")
        cur = m.group("s1") or m.group("s2") or m.group("c2") or m.group("c3")
        value = _amount_value(number, _currency(cur))
        if value is not None:
            found.append((m.start(), m.end(), value))
    return found


def parse_amount(text: str) -> str | None:
    """The normalised value of the first amount in ``text`` (for model-found spans)."""
    found = find_amounts(text)
    if found:
        return found[0][2]
    return None


def find_numbers(
    text: str, *, digits: bool = True, words: bool = True
) -> list[tuple[int, int, str]]:
    """(start, end, value) for digit numbers and number words."""
    out = []
    for rx, on in ((_DIGITS, digits), (_WORD_NUMBER, words)):
        if not on:
            continue
        for m in rx.finditer(text):
            value = parse_number(m.group())
            if value is not None:
                out.append((m.start(), m.end(), value))
    return sorted(out)
