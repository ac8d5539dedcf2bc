"""Built-in recognisers against a fixed reference time (Wednesday 2024-11-20 10:00)."""

from __future__ import annotations

from datetime import datetime

import pytest

from agents.nlu.recognisers import RecogniserConfig, Recognisers, normalise_value
from agents.nlu.recognisers.contact import phone_value
from agents.nlu.recognisers.datetimes import find_dates, find_times
from agents.nlu.recognisers.numbers import find_amounts, find_numbers

REF = datetime(2024, 11, 20, 10, 0)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("tomorrow", "2024-11-21"),
        ("yesterday", "2024-11-19"),
        ("the day after tomorrow", "2024-11-22"),
        ("friday", "2024-11-22"),
        ("next friday", "2024-11-22"),
        ("next wednesday", "2024-11-27"),
        ("last friday", "2024-11-15"),
        ("3rd of march", "2024-03-03"),
        ("March 3rd", "2024-03-03"),
        ("Jan the 19th", "2024-01-19"),
        ("7th of Jan 2018", "2018-01-07"),
        ("in 7 days", "2024-11-27"),
        ("8 weeks ago", "2024-09-25"),
        ("in 2 months", "2025-01-20"),
        ("the 16th", "2024-11-16"),
        ("2024-02-29", "2024-02-29"),
        ("05/03/2024", "2024-03-05"),
    ],
)
def test_dates_resolve_relative_to_the_reference(text: str, value: str) -> None:
    found = find_dates(f"pay it {text} please", REF)
    assert [(f[2]) for f in found] == [value]
    start, end, _ = found[0]
    assert f"pay it {text} please"[start:end] == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("25 to 7 p.m.", "18:35"),
        ("half past 17", "17:30"),
        ("quarter to 9", "08:45"),
        ("9 05 in the morning", "09:05"),
        ("10 past 9 night", "21:10"),
        ("12:45 p.m.", "12:45"),
        ("0 35 a.m.", "00:35"),
        ("5pm", "17:00"),
        ("9:55", "09:55"),
        ("10 o'clock", "10:00"),
        ("noon", "12:00"),
        ("midnight", "00:00"),
    ],
)
def test_times(text: str, value: str) -> None:
    assert [f[2] for f in find_times(f"at {text}")] == [value]


def test_no_dates_in_ordinary_words() -> None:
    assert find_dates("the sun is out and I sat down", REF) == []
    assert find_times("I am here") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("£27", "27.00 GBP"),
        ("125.50 EUR", "125.50 EUR"),
        ("40€", "40.00 EUR"),
        ("$8,882", "8882.00 USD"),
        ("400 dollars", "400.00 USD"),
        ("56.79 pounds", "56.79 GBP"),
        ("USD 10", "10.00 USD"),
    ],
)
def test_amounts(text: str, value: str) -> None:
    found = find_amounts(f"I paid {text} today")
    assert [f[2] for f in found] == [value]


def test_numbers() -> None:
    assert [f[2] for f in find_numbers("1,250.5 and twelve and 7")] == ["1250.5", "12", "7"]


def test_phone_values() -> None:
    assert phone_value("+44 20 7946 0958") == "+442079460958"
    assert phone_value("0044 20 7946 0958") == "+442079460958"
    assert phone_value("020 7946 0958", "44") == "+442079460958"
    assert phone_value("020 7946 0958") == "02079460958"
    assert phone_value("12") is None


def test_recognisers_together_and_overlap_resolution() -> None:
    rec = Recognisers(
        RecogniserConfig(
            id_patterns={"order_id": r"\b([A-Z]{2}-\d{6})\b"}, default_country_code="44"
        )
    )
    text = "Order AB-123456: refund £45.50 to ann@Example.com by friday, call 07700 900123"
    found = {(m.entity, m.text, m.value, m.source) for m in rec.find(text, REF)}
    assert found == {
        ("order_id", "AB-123456", "AB-123456", "ids"),
        ("amount", "£45.50", "45.50 GBP", "amount"),
        ("email", "ann@Example.com", "ann@example.com", "email"),
        ("date", "friday", "2024-11-22", "date"),
        ("phone", "07700 900123", "+447700900123", "phone"),
    }


def test_bad_id_pattern_is_reported_with_its_name() -> None:
    with pytest.raises(ValueError, match="order_id"):
        RecogniserConfig(id_patterns={"order_id": "("})


def test_normalise_value_by_entity_name() -> None:
    assert normalise_value("date_from", "7th of Jan 2018", REF) == "2018-01-07"
    assert normalise_value("time_to", "25 to 7 p.m.", REF) == "18:35"
    assert normalise_value("amount_of_money", "73 pounds", REF) == "73.00 GBP"
    assert normalise_value("amount_of_money", "400", REF) == "400"
    assert normalise_value("company_name", " Marks  and Spencer", REF) == "Marks and Spencer"
