"""Typed slot values from text and entities (table-driven)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from agents.dialogue.domain import SlotSpec
from agents.dialogue.slots import (
    answer_value,
    display_value,
    extract_slots,
    parse_amount,
    parse_boolean,
    parse_categorical,
    parse_datetime,
    parse_number,
    parse_pattern,
    parse_text,
)

NOW = datetime(2026, 12, 7, 10, 0)  # a Monday
CARD = SlotSpec("card_type", "categorical", entities=("card_type",),
                values={"debit": ("debit card", "bank card"), "credit": ("credit card", "visa")})
CITY = SlotSpec("city", "categorical", values={"Zürich": ("zurich",), "São Paulo": ()})
ORDER = SlotSpec("order_id", "pattern", entities=("order_id",), pattern=r"\b(\d{5,10})\b")
AMOUNT = SlotSpec("amount", "amount", entities=("amount",))
RECIPIENT = SlotSpec("recipient", "text", entities=("recipient",),
                     extract=(r"\bto\s+([A-Z][\w'-]+)",))


@pytest.mark.parametrize(("text", "expected"), [
    ("300", 300), ("1,200.50", 1200.5), ("three hundred", 300), ("twenty five", 25),
    ("two thousand five hundred", 2500), ("make it 2k", 2000), ("about 12.5 please", 12.5),
    ("none", None), ("a lot", None),
])
def test_numbers(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(("text", "bare", "expected"), [
    ("50 euros", False, {"value": 50, "currency": "EUR"}),
    ("€50", False, {"value": 50, "currency": "EUR"}),
    ("$1,200", False, {"value": 1200, "currency": "USD"}),
    ("12.50 GBP", False, {"value": 12.5, "currency": "GBP"}),
    ("50", True, {"value": 50, "currency": "EUR"}),
    ("fifty", True, {"value": 50, "currency": "EUR"}),
    ("50", False, None),
    ("nothing", True, None),
])
def test_amounts(text: str, bare: bool, expected: Any) -> None:
    assert parse_amount(text, "EUR", bare_number=bare) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("yes", True), ("Yeah!", True), ("correct", True), ("go ahead", True), ("sure thing", True),
    ("no", False), ("nope", False), ("no thanks", False), ("not really", False),
    ("maybe", None), ("yes no", None), ("", None),
])
def test_booleans(text: str, expected: bool | None) -> None:
    assert parse_boolean(text) is expected


@pytest.mark.parametrize(("slot", "text", "expected"), [
    (CARD, "my debit card", "debit"), (CARD, "the VISA one", "credit"),
    (CARD, "Bank Card", "debit"), (CARD, "a gift card", None), (CARD, "debitor", None),
    (CITY, "to zurich", "Zürich"), (CITY, "ZÜRICH", "Zürich"), (CITY, "sao paulo", "São Paulo"),
])
def test_categorical_values_and_synonyms(slot: SlotSpec, text: str, expected: str | None) -> None:
    assert parse_categorical(slot, text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("order 12345 please", "12345"), ("1234", None), ("12345678901", None),
    ("it's 9876543210", "9876543210"),
])
def test_patterns(text: str, expected: str | None) -> None:
    assert parse_pattern(ORDER.pattern or "", text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("tomorrow", "2026-12-08"), ("next friday at 5pm", "2026-12-11T17:00"),
    ("at 9:30", "09:30"), ("whenever", None),
])
def test_datetimes(text: str, expected: str | None) -> None:
    assert parse_datetime(text, NOW) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Anna", "Anna"), ("it's Anna.", "Anna"), ("  to  Anna Smith ", "Anna Smith"), ("?", None),
])
def test_text_answers(text: str, expected: str | None) -> None:
    assert parse_text(text) == expected


def test_several_slots_from_one_message() -> None:
    text = "send 50 euros to Anna from my debit card"
    entities = [{"entity": "amount", "start": 5, "end": 13, "text": "50 euros",
                 "value": "50.00 EUR", "source": "amount"}]
    found = extract_slots([AMOUNT, RECIPIENT, CARD, ORDER], text, entities, currency="EUR",
                          now=NOW)
    assert found == {"amount": {"value": 50, "currency": "EUR"}, "recipient": "Anna",
                     "card_type": "debit"}


def test_entities_come_first_and_must_fit_the_type() -> None:
    model = [{"entity": "recipient", "start": 0, "end": 4, "text": "Mary", "value": "Mary",
              "source": "model"}]
    assert extract_slots([RECIPIENT], "Mary to John", model, currency="EUR",
                         now=NOW) == {"recipient": "Mary"}
    bad = [{"entity": "card_type", "start": 0, "end": 4, "text": "gold", "value": "gold",
            "source": "model"}]
    assert extract_slots([CARD], "gold", bad, currency="EUR", now=NOW) == {}


def test_a_bare_text_fills_only_the_slot_asked_for() -> None:
    assert extract_slots([RECIPIENT, AMOUNT], "Anna", [], currency="EUR", now=NOW) == {}
    assert answer_value(RECIPIENT, "Anna", currency="EUR", now=NOW) == "Anna"
    assert answer_value(AMOUNT, "300", currency="USD", now=NOW) == {"value": 300,
                                                                    "currency": "USD"}
    confirm = SlotSpec("confirm", "boolean")
    assert answer_value(confirm, "yes", currency="EUR", now=NOW) is True
    assert answer_value(confirm, "do it now", currency="EUR", now=NOW, intent="affirm",
                        affirm=("affirm",)) is True
    assert answer_value(SlotSpec("x", "text", from_answer=False), "Anna", currency="EUR",
                        now=NOW) is None


@pytest.mark.parametrize(("value", "shown"), [
    ({"value": 1200, "currency": "EUR"}, "1,200 EUR"), ({"value": 12.5, "currency": "GBP"},
                                                        "12.50 GBP"),
    (True, "yes"), (False, "no"), ("Anna", "Anna"), (None, ""),
])
def test_display(value: Any, shown: str) -> None:
    assert display_value(value) == shown
