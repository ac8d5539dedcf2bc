"""What the NLU agent sends: a ChatUnderstood per message, valid for its schema."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agents.nlu.agent import understood_events, understood_payload
from agents.nlu.results import EntityMatch, Understanding
from streams.codecs import AvroCodec

U = Understanding(
    intent="order_status", confidence=0.875, oos=False,
    ranking=(("order_status", 0.875), ("cancel_order", 0.125)),
    entities=(EntityMatch("order_id", 18, 24, "A-1234", "A-1234", "order_id"),),
    model_version="v7",
)  # fmt: skip


def chat_message(event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "tenant_id": "t", "conversation_id": "c", "user_id": "u",
            "channel": "ws", "seq": 1, "timestamp": 0, "trace_id": f"tr-{event_id}",
            "reply_route": "gw", "payload": {"text": "where is my order A-1234",
                                             "client_msg_id": "m1", "locale": None}}


def test_the_understood_payload_carries_the_message_and_the_models_reading() -> None:
    payload = understood_payload("where is my order A-1234", "m1", U, ["bot_tester"])
    assert payload == {
        "text": "where is my order A-1234", "client_msg_id": "m1", "intent": "order_status",
        "confidence": 0.875, "oos": False,
        "ranking": [{"intent": "order_status", "confidence": 0.875},
                    {"intent": "cancel_order", "confidence": 0.125}],
        "entities": [{"entity": "order_id", "start": 18, "end": 24, "text": "A-1234",
                      "value": "A-1234", "source": "order_id"}],
        "model_version": "v7", "roles": ["bot_tester"],
    }  # fmt: skip
    codec = AvroCodec("chat_understood")
    event = {"event_id": "e1", "tenant_id": "t", "conversation_id": "c", "user_id": "u",
             "channel": "ws", "seq": 1, "timestamp": 0, "trace_id": "e1", "reply_route": "",
             "payload": payload}
    assert codec.decode(codec.encode(event))["payload"] == payload


def test_understood_events_keep_the_envelope_and_log_the_trace_at_debug(
        caplog: pytest.LogCaptureFixture) -> None:
    messages = [chat_message("e1"), chat_message("e2")]
    caplog.set_level(logging.DEBUG, logger="agents.nlu.agent")
    events = understood_events(messages, [U, U])

    codec = AvroCodec("chat_understood")
    for msg, event in zip(messages, events, strict=True):
        assert {k: v for k, v in event.items() if k != "payload"} == \
            {k: v for k, v in msg.items() if k != "payload"}
        assert codec.decode(codec.encode(event))["payload"]["intent"] == "order_status"
    lines = [r for r in caplog.records if r.getMessage().startswith("nlu.message.understood")]
    assert [(r.getMessage().split()[1], r.trace_id) for r in lines] == [  # type: ignore[attr-defined]
        ("event_id=e1", "tr-e1"), ("event_id=e2", "tr-e2")]


def test_understood_events_log_nothing_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agents.nlu.agent")
    understood_events([chat_message("e1")], [U])
    assert not caplog.records
