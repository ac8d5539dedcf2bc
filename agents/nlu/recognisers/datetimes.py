"""Dates and times, resolved against a reference datetime.

Values are ISO 8601: dates ``YYYY-MM-DD``, times ``HH:MM``. Conventions:

* ``friday`` / ``this friday`` / ``coming friday``: the next Friday on or after the
  reference day; ``next friday``: the first Friday strictly after it;
  ``last friday``: the most recent Friday strictly before it.
* A day and month without a year (``3rd of march``) is in the reference year;
  a bare ordinal (``the 16th``) is that day of the reference month.
* Numeric dates are day first: ``05/03/2024`` is 5 March 2024.
* ``25 to 7 p.m.`` is 18:35; ``half past 5`` is 05:30 (add ``pm`` or
  ``in the evening`` for 17:30); ``noon``/``midnight`` are 12:00/00:00.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta

__all__ = ["find_dates", "find_times", "parse_date", "parse_time"]

MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4,
    "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
    "september": 9, "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11,
    "nov": 11, "december": 12, "dec": 12,
}
WEEKDAYS = {
    "monday": 0, "mon": 0, "tuesday": 1, "tues": 1, "tue": 1, "wednesday": 2, "wed": 2,
    "thursday": 3, "thurs": 3, "thu": 3, "friday": 4, "fri": 4, "saturday": 5, "sat": 5,
    "sunday": 6, "sun": 6,
}
_UNITS = {"day": 1, "week": 7, "fortnight": 14, "month": 0, "year": 0}
_SMALL = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
# Stand-alone weekdays are full names only: "sat", "sun", "wed" are ordinary words.
_WEEKDAY = "|".join(sorted((w for w in WEEKDAYS if w.endswith("day")), key=len, reverse=True))
_COUNT = r"\d{1,3}|" + "|".join(_SMALL)
_ORD = r"(?P<d>\d{1,2})(?:st|nd|rd|th)?"

_RELATIVE_DAY = re.compile(
    r"\b(?:the\s+)?day\s+after\s+tomorrow\b|\b(?:the\s+)?day\s+before\s+yesterday\b"
    r"|\btoday\b|\btonight\b|\btomorrow\b|\byesterday\b|\blast\s+night\b",
    re.IGNORECASE,
)
_OFFSET = re.compile(
    rf"\bin\s+(?P<n1>{_COUNT})\s+(?P<u1>day|week|fortnight|month|year)s?\b"
    rf"|\b(?P<n2>{_COUNT})\s+(?P<u2>day|week|fortnight|month|year)s?\s+ago\b",
    re.IGNORECASE,
)
_WEEKDAY_RE = re.compile(
    rf"\b(?:(?P<mod>this|next|last|coming|past|previous)\s+)?(?P<wd>{_WEEKDAY})\b\.?",
    re.IGNORECASE,
)
_DAY_MONTH = re.compile(
    rf"\b(?:the\s+)?{_ORD}\s+(?:of\s+)?(?P<m>{_MONTH})\b\.?(?:,?\s+(?P<y>\d{{4}})\b)?",
    re.IGNORECASE,
)
_MONTH_DAY = re.compile(
    rf"\b(?P<m>{_MONTH})\.?\s+(?:the\s+)?{_ORD}\b(?:,?\s+(?P<y>\d{{4}})\b)?",
    re.IGNORECASE,
)
_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUMERIC = re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d{2})\b")
_ORDINAL = re.compile(r"\b(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)\b", re.IGNORECASE)
_DATE_HINT = re.compile(
    rf"\d|\b(?:today|tonight|tomorrow|yesterday|last night|ago|{_WEEKDAY})\b", re.IGNORECASE
)

_MERIDIEM = r"(?P<mer>a\.?\s?m\b\.?|p\.?\s?m\b\.?)"
_DAYPART = r"(?:in\s+the\s+)?(?P<part>morning|afternoon|evening|night|tonight)"
_SUFFIX = rf"(?:\s*{_MERIDIEM}|\s+{_DAYPART})?"
_SUFFIX2 = _SUFFIX.replace("mer", "mer2").replace("part", "part2")
_TIME = re.compile(
    rf"\b(?P<word>noon|midday|midnight)\b"
    rf"|\b(?P<rel>half|quarter|\d{{1,2}})\s+(?:minutes?\s+)?(?P<dir>past|to|after)\s+"
    rf"(?P<h1>\d{{1,2}}){_SUFFIX}"
    rf"|\b(?P<h2>\d{{1,2}}):(?P<m2>\d{{2}}){_SUFFIX2}"
    rf"|\b(?P<h3>\d{{1,2}})\s(?P<m3>\d{{2}})(?:\s*{_MERIDIEM.replace('mer', 'mer3')}"
    rf"|\s+{_DAYPART.replace('part', 'part3')})"
    rf"|\b(?P<h4>\d{{1,2}})\s*{_MERIDIEM.replace('mer', 'mer4')}"
    rf"|\b(?P<h5>\d{{1,2}})\s*o'?\s?clock\b",
    re.IGNORECASE,
)


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _count(token: str) -> int:
    low = token.lower()
    return _SMALL[low] if low in _SMALL else int(low)


def _weekday(mod: str | None, weekday: int, today: date) -> date:
    delta = (weekday - today.weekday()) % 7
    mod = (mod or "").lower()
    if mod in {"last", "past", "previous"}:
        return today - timedelta(days=(today.weekday() - weekday) % 7 or 7)
    if mod == "next":
        return today + timedelta(days=delta or 7)
    return today + timedelta(days=delta)


def find_dates(text: str, reference: datetime) -> list[tuple[int, int, str]]:
    """(start, end, ISO date) for every date expression, longest first on overlap."""
    if not _DATE_HINT.search(text):
        return []
    today = reference.date()
    found: list[tuple[int, int, date]] = []
    for m in _RELATIVE_DAY.finditer(text):
        low = " ".join(m.group().lower().split())
        if "after" in low:
            offset = 2
        elif "before" in low:
            offset = -2
        elif low in {"today", "tonight"}:
            offset = 0
        elif low == "tomorrow":
            offset = 1
        else:
            offset = -1
        found.append((m.start(), m.end(), today + timedelta(days=offset)))
    for m in _OFFSET.finditer(text):
        ago = m.group("n2") is not None
        n = _count(m.group("n2") if ago else m.group("n1"))
        unit = (m.group("u2") if ago else m.group("u1")).lower()
        sign = -1 if ago else 1
        if unit == "month":
            day = _add_months(today, sign * n)
        elif unit == "year":
            day = _add_months(today, sign * 12 * n)
        else:
            day = today + timedelta(days=sign * n * _UNITS[unit])
        found.append((m.start(), m.end(), day))
    for m in _WEEKDAY_RE.finditer(text):
        end = m.end() - (1 if m.group().endswith(".") else 0)
        found.append((m.start(), end, _weekday(m.group("mod"), WEEKDAYS[m.group("wd").lower()],
                                              today)))
    for rx in (_DAY_MONTH, _MONTH_DAY):
        for m in rx.finditer(text):
            year = int(m.group("y")) if m.group("y") else today.year
            d = _safe_date(year, MONTHS[m.group("m").lower().rstrip(".")], int(m.group("d")))
            if d is not None:
                found.append((m.start(), m.end(), d))
    for m in _ISO.finditer(text):
        d = _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if d is not None:
            found.append((m.start(), m.end(), d))
    for m in _NUMERIC.finditer(text):
        year = int(m.group(3))
        year = year + 2000 if year < 100 else year
        d = _safe_date(year, int(m.group(2)), int(m.group(1)))
        if d is not None:
            found.append((m.start(), m.end(), d))
    for m in _ORDINAL.finditer(text):
        d = _safe_date(today.year, today.month, int(m.group(1)))
        if d is not None:
            found.append((m.start(), m.end(), d))
    return [(s, e, d.isoformat()) for s, e, d in _longest(found)]


def _longest(found: list[tuple[int, int, date]]) -> list[tuple[int, int, date]]:
    kept: list[tuple[int, int, date]] = []
    for item in sorted(found, key=lambda f: (f[0] - f[1], f[0])):
        if all(item[1] <= k[0] or item[0] >= k[1] for k in kept):
            kept.append(item)
    return sorted(kept)


def _hour_24(hour: int, meridiem: str | None, part: str | None) -> int:
    if meridiem:
        pm = meridiem.lower().startswith("p")
        if hour == 12:
            return 12 if pm else 0
        return hour + 12 if pm and hour < 12 else hour
    if part:
        part = part.lower()
        if part in {"afternoon", "evening"} and hour < 12:
            return hour + 12
        if part in {"night", "tonight"} and 6 <= hour < 12:
            return hour + 12
        if part == "morning" and hour == 12:
            return 0
    return hour


def find_times(text: str) -> list[tuple[int, int, str]]:
    """(start, end, ``HH:MM``) for every time of day."""
    if not any(c.isdigit() for c in text) and not re.search(
        r"noon|midday|midnight", text, re.IGNORECASE
    ):
        return []
    out = []
    for m in _TIME.finditer(text):
        g = m.groupdict()
        if g["word"]:
            hour, minute = (0, 0) if g["word"].lower() == "midnight" else (12, 0)
        elif g["rel"]:
            rel = g["rel"].lower()
            minutes = 30 if rel == "half" else 15 if rel == "quarter" else int(rel)
            hour = _hour_24(int(g["h1"]), g["mer"], g["part"])
            if minutes >= 60:
                continue
            if g["dir"].lower() == "to":
                hour, minute = (hour - 1) % 24, 60 - minutes
            else:
                minute = minutes
        elif g["h2"]:
            hour, minute = _hour_24(int(g["h2"]), g["mer2"], g["part2"]), int(g["m2"])
        elif g["h3"]:
            hour, minute = _hour_24(int(g["h3"]), g["mer3"], g["part3"]), int(g["m3"])
        elif g["h4"]:
            hour, minute = _hour_24(int(g["h4"]), g["mer4"], None), 0
        else:
            hour, minute = int(g["h5"]), 0
        if 0 <= hour < 24 and 0 <= minute < 60:
            out.append((m.start(), m.end(), f"{hour:02d}:{minute:02d}"))
    return out


def parse_date(text: str, reference: datetime) -> str | None:
    """ISO value of the first date in ``text`` (normalises model-found spans)."""
    found = find_dates(text, reference)
    return found[0][2] if found else None


def parse_time(text: str) -> str | None:
    """``HH:MM`` of the first time in ``text``; bare ``"9"`` → ``"09:00"``."""
    found = find_times(text)
    if found:
        return found[0][2]
    stripped = text.strip()
    if stripped.isdigit() and int(stripped) < 24:
        return f"{int(stripped):02d}:00"
    return None
