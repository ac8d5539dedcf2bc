"""What the NLU agent sends: a ChatUnderstood per message, valid for its schema."""

from __future__ import annotations

from agents.nlu.agent import understood_payload
from agents.nlu.results import EntityMatch, Understanding
from streams.codecs import AvroCodec


def test_the_understood_payload_carries_the_message_and_the_models_reading() -> None:
    u = Understanding(
        intent="order_status", confidence=0.875, oos=False,
        ranking=(("order_status", 0.875), ("cancel_order", 0.125)),
        entities=(EntityMatch("order_id", 18, 24, "A-1234", "A-1234", "order_id"),),
        model_version="v7",
    )  # fmt: skip
    payload = understood_payload("where is my order A-1234", "m1", u)
    assert payload == {
        "text": "where is my order A-1234", "client_msg_id": "m1", "intent": "order_status",
        "confidence": 0.875, "oos": False,
        "ranking": [{"intent": "order_status", "confidence": 0.875},
                    {"intent": "cancel_order", "confidence": 0.125}],
        "entities": [{"entity": "order_id", "start": 18, "end": 24, "text": "A-1234",
                      "value": "A-1234", "source": "order_id"}],
        "model_version": "v7",
    }  # fmt: skip
    codec = AvroCodec("chat_understood")
    event = {"event_id": "e1", "tenant_id": "t", "conversation_id": "c", "user_id": "u",
             "channel": "ws", "seq": 1, "timestamp": 0, "trace_id": "e1", "reply_route": "",
             "payload": payload}
    assert codec.decode(codec.encode(event))["payload"] == payload
