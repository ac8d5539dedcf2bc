"""E-mail addresses, phone numbers and configurable id patterns."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["compile_id_patterns", "find_emails", "find_ids", "find_phones", "phone_value"]

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d\s().-]{5,}\d(?![\w])")
_ISO_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}$")


def find_emails(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lower-cased address)."""
    if "@" not in text:
        return []
    return [(m.start(), m.end(), m.group().lower()) for m in _EMAIL.finditer(text)]


def phone_value(raw: str, default_country_code: str = "") -> str | None:
    """Normalise a phone number: E.164 (``+441234567890``) when the country is known.

    ``+`` or ``00`` give the country; a national number starting with ``0`` uses
    ``default_country_code`` when one is configured; otherwise the digits alone.
    None when it has fewer than 7 or more than 15 digits.
    """
    digits = re.sub(r"\D", "", raw)
    stripped = raw.strip()
    if stripped.startswith("+"):
        e164 = digits
    elif stripped.startswith("00"):
        e164 = digits[2:]
    elif default_country_code and digits.startswith("0"):
        e164 = default_country_code + digits[1:]
    else:
        return digits if 7 <= len(digits) <= 15 else None
    return "+" + e164 if 7 <= len(e164) <= 15 else None


def find_phones(text: str, default_country_code: str = "") -> list[tuple[int, int, str]]:
    """(start, end, value) for sequences that look like phone numbers (7-15 digits)."""
    out = []
    for m in _PHONE.finditer(text):
        raw = m.group().rstrip(").- ")
        if _ISO_DATE.match(raw) or (raw.count(".") > 0 and not raw.startswith("+")):
            continue  # a date or a decimal number, not a phone
        n_digits = sum(c.isdigit() for c in raw)
        if n_digits < 8 and not raw.startswith(("+", "00")):
            continue
        value = phone_value(raw, default_country_code)
        if value is not None:
            out.append((m.start(), m.start() + len(raw), value))
    return out


def compile_id_patterns(patterns: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    """Compile ``{entity: regex}``; a bad regex fails with the entity's name."""
    compiled = {}
    for name, pattern in patterns.items():
        try:
            compiled[name] = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"id pattern for {name!r} is not a valid regex: {exc}") from exc
    return compiled


def find_ids(
    text: str, patterns: Mapping[str, re.Pattern[str]]
) -> list[tuple[str, int, int, str]]:
    """(entity, start, end, value) per id match; the value is group 1 (or all), upper-cased."""
    out = []
    for name, pattern in patterns.items():
        for m in pattern.finditer(text):
            if m.lastindex:
                start, end = m.span(1)
            else:
                start, end = m.span()
            if end > start:
                out.append((name, start, end, text[start:end].upper()))
    return out
