"""The dialogue-state record: compact JSON with a schema version, read back exactly."""

from __future__ import annotations

import json

import pytest

from agents.dialogue.state import (
    SCHEMA_VERSION,
    DialogueState,
    Frame,
    HistoryEntry,
    Pending,
    StateFormatError,
)

FULL = DialogueState(
    version=7, bot_version="abc123", stack=(Frame("transfer_money", 3, {"asked": 1}),),
    slots={"amount": {"value": 50, "currency": "EUR"}, "recipient": "Anna"},
    requested_slot="confirm_transfer", attempts={"confirm_transfer": 1}, handoff=False,
    pending=Pending("action", "send_money"),
    history=(HistoryEntry("user", "send 50 euros to Anna", "transfer_money"),
             HistoryEntry("bot", "Just to confirm?", "utter_ask_confirm_transfer")),
    last_activity_ms=1_765_000_000_000, sessions=2)


@pytest.mark.parametrize("state", [DialogueState(), FULL,
                                   DialogueState(version=1, handoff=True, last_activity_ms=5)])
def test_round_trip(state: DialogueState) -> None:
    data = state.to_bytes()
    assert DialogueState.from_bytes(data) == state
    assert json.loads(data)["s"] == SCHEMA_VERSION
    assert b" " not in data.replace(b"send 50 euros to Anna", b"").replace(
        b"Just to confirm?", b"")  # compact


def test_a_newer_schema_fails_clearly() -> None:
    data = json.dumps({"s": SCHEMA_VERSION + 1, "v": 1}).encode()
    with pytest.raises(StateFormatError, match="newer than this version"):
        DialogueState.from_bytes(data)


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"v": 1}',
                                  b'{"s": 1, "f": [["x"]]}', b'{"s": 1, "a": {"x": "y"}}'])
def test_corrupt_records_fail_clearly(data: bytes) -> None:
    with pytest.raises(StateFormatError) as caught:
        DialogueState.from_bytes(data)
    assert str(caught.value).startswith("cannot read the stored dialogue state")


def test_an_older_minimal_record_loads() -> None:
    state = DialogueState.from_bytes(b'{"s":1,"v":3,"t":10}')
    assert state.version == 3 and state.stack == () and state.slots == {}
