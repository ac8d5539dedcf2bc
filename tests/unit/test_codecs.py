"""Avro codecs: round trips, wire format, corrupt input."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from kernel.errors import DecodeError, SchemaError
from schemas import current
from streams.codecs import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, AvroCodec


def chat_message(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "event_id": "e-1", "tenant_id": "t1", "conversation_id": "c42", "user_id": "u7",
        "channel": "ws", "seq": 3, "timestamp": datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        "trace_id": "tr-1", "reply_route": "gw-a",
        "payload": {"text": "héllo 👋", "client_msg_id": "m1", "locale": "en-GB",
                    "tier": "premium", "roles": ["agent", "admin"]},
    }
    record.update(overrides)
    return record


def test_round_trip_preserves_every_field() -> None:
    codec = AvroCodec("chat_message")
    record = chat_message()
    assert codec.decode(codec.encode(record)) == record


def test_single_object_encoding_header_names_the_writer_schema() -> None:
    codec = AvroCodec("chat_message")
    data = codec.encode(chat_message())
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert data[2:10] == current("chat_message").fingerprint


def test_timestamp_accepts_epoch_millis() -> None:
    codec = AvroCodec("chat_message")
    decoded = codec.decode(codec.encode(chat_message(timestamp=1_763_726_400_000)))
    assert decoded["timestamp"] == datetime.fromtimestamp(1_763_726_400, UTC)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"{\"json\": true}", "bad magic"),
        (SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"body", "unknown schema fingerprint"),
        (CONFLUENT_MAGIC + struct.pack(">I", 1), "bad magic"),
    ],
)
def test_undecodable_bytes_raise_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        AvroCodec("chat_message").decode(data)


def test_truncated_body_raises_decode_error() -> None:
    codec = AvroCodec("chat_message")
    data = codec.encode(chat_message())
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(data[:14])


def test_record_missing_a_field_is_a_schema_error() -> None:
    record = chat_message()
    del record["user_id"]
    with pytest.raises(SchemaError, match=r"user_id|ChatMessage"):
        AvroCodec("chat_message").encode(record)


def test_every_schema_round_trips_an_empty_payload_defaults() -> None:
    codec = AvroCodec("bot_reply")
    reply = {
        "event_id": "e-1.r", "tenant_id": "t1", "conversation_id": "c42", "user_id": "u7",
        "channel": "ws", "seq": 1, "timestamp": 0, "trace_id": "tr", "reply_route": "gw",
        "payload": {"text": "hi", "in_reply_to": "e-1", "client_msg_id": "m1",
                    "quick_replies": [], "sources": [], "sender": "bot", "response": "",
                    "agent_id": "", "turn_end": False, "debug_json": ""},
    }
    assert codec.decode(codec.encode(reply))["payload"] == reply["payload"]
