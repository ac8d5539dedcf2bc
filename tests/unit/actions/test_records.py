"""Requests and results as they travel on the bus: built from an envelope, encoded with
the topics' Avro codecs, read back into the same outcome."""

from __future__ import annotations

from typing import Any

import pytest

from agents.actions import (
    ActionOutcome,
    FailureKind,
    action_request,
    action_result,
    read_result,
    request_event_id,
    result_event_id,
)
from agents.actions.records import context_of, parse_inputs
from streams.codecs import AvroCodec

ENVELOPE: dict[str, Any] = {
    "event_id": "e42", "tenant_id": "acme", "conversation_id": "c7", "user_id": "u1",
    "channel": "ws", "seq": 3, "timestamp": 1_700_000_000_000, "trace_id": "tr",
    "reply_route": "gw-1", "payload": {"text": "send 50 euros to Anna", "client_msg_id": "m9"},
}


def test_a_request_round_trips_through_its_codec() -> None:
    request = action_request(ENVELOPE, "transfer_money",
                             {"amount": {"value": 50, "currency": "EUR"}, "recipient": "Anna"},
                             bot_version="abc123", now_ms=1_700_000_000_500)
    decoded = AvroCodec("action_request").decode(AvroCodec("action_request").encode(request))
    assert decoded["event_id"] == request_event_id("e42") == "e42.c"
    assert decoded["conversation_id"] == "c7" and decoded["seq"] == 3
    assert decoded["payload"]["action"] == "transfer_money"
    assert decoded["payload"]["client_msg_id"] == "m9"
    assert parse_inputs(decoded) == {"amount": {"value": 50, "currency": "EUR"},
                                     "recipient": "Anna"}
    ctx = context_of(decoded)
    assert (ctx.idempotency_key, ctx.tenant_id, ctx.conversation_id, ctx.bot_version) == \
        ("e42.c", "acme", "c7", "abc123")


def test_inputs_that_are_not_json_cannot_be_sent() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        action_request(ENVELOPE, "x", {"when": object()})


@pytest.mark.parametrize(("text", "error"), [
    ("[1, 2]", "must be a JSON object, got list"), ("{oops", "inputs_json is not JSON")])
def test_inputs_that_are_not_an_object_are_refused(text: str, error: str) -> None:
    request = action_request(ENVELOPE, "x", {})
    request["payload"]["inputs_json"] = text
    with pytest.raises(ValueError, match=error):
        parse_inputs(request)


@pytest.mark.parametrize("outcome", [
    ActionOutcome("transfer_money", True, {"reference": "T-1"}, duration_ms=12),
    ActionOutcome.failure("transfer_money", FailureKind.TIMEOUT, "no result within 10 s", 10_000),
    ActionOutcome.failure("nope", FailureKind.UNKNOWN_ACTION, "no action 'nope' is registered"),
])
def test_a_result_round_trips_to_the_same_outcome(outcome: ActionOutcome) -> None:
    request = action_request(ENVELOPE, outcome.action, {})
    result = action_result(request, outcome)
    codec = AvroCodec("action_result")
    decoded = codec.decode(codec.encode(result))
    assert decoded["event_id"] == result_event_id("e42.c") == "e42.c.a"
    assert decoded["conversation_id"] == "c7" and decoded["seq"] == 3
    assert read_result(decoded) == ("e42.c", outcome)


def test_the_same_request_always_gets_the_same_result_id() -> None:
    request = action_request(ENVELOPE, "echo", {})
    first = action_result(request, ActionOutcome("echo", True, {}), now_ms=1)
    again = action_result(request, ActionOutcome("echo", True, {}), now_ms=2)
    assert first["event_id"] == again["event_id"]


def test_a_contradictory_result_is_refused() -> None:
    request = action_request(ENVELOPE, "echo", {})
    result = action_result(request, ActionOutcome("echo", True, {}))
    result["payload"]["error"] = "boom"
    with pytest.raises(ValueError, match="carries an error"):
        read_result(result)
    result["payload"].update(ok=False, error_kind="exploded")
    with pytest.raises(ValueError, match="exploded"):
        read_result(result)


def test_an_event_decided_again_makes_the_same_request_dated_by_the_event() -> None:
    """A worker that died before recording a turn decides its event again: the request
    must be the same, so that the action's call under its key carries the same body."""
    first = action_request(ENVELOPE, "open_ticket", {"email": "a@example.com"})
    codec = AvroCodec("action_request")
    decoded_envelope = codec.decode(codec.encode(first))  # timestamp: an aware datetime
    assert not isinstance(decoded_envelope["timestamp"], int)
    again = action_request({**decoded_envelope, "event_id": "e42"}, "open_ticket",
                           {"email": "a@example.com"})
    assert first["timestamp"] == again["timestamp"] == ENVELOPE["timestamp"]
    assert codec.encode(first) == codec.encode(again)
    assert context_of(decoded_envelope).requested_at_ms == ENVELOPE["timestamp"]
    assert action_request(ENVELOPE, "x", {}, now_ms=5)["timestamp"] == 5
