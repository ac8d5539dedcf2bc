"""Client frame parsing and server frame building (no sockets)."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import (
    FrameError,
    MessageFrame,
    PingFrame,
    ResumeFrame,
    TypingFrame,
    ack_frame,
    error_frame,
    parse_client_frame,
    reply_frame,
)

LIMIT = 100


def parse(obj: object) -> object:
    return parse_client_frame(json.dumps(obj), LIMIT)


def test_message_frame() -> None:
    frame = parse({"type": "message", "text": "hi", "client_msg_id": "m1"})
    assert frame == MessageFrame("hi", "m1")


def test_other_frames() -> None:
    assert parse({"type": "resume", "last_seq": 4}) == ResumeFrame(4)
    assert parse({"type": "typing"}) == TypingFrame()
    assert parse({"type": "ping"}) == PingFrame()


@pytest.mark.parametrize(
    "data, code",
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        (json.dumps({"type": "shout"}), "unknown_type"),
        (json.dumps({"text": "no type"}), "unknown_type"),
        (json.dumps({"type": "message", "text": "x"}), "bad_frame"),
        (json.dumps({"type": "message", "text": 5, "client_msg_id": "m"}), "bad_frame"),
        (json.dumps({"type": "message", "text": "  ", "client_msg_id": "m"}), "empty_text"),
        (json.dumps({"type": "message", "text": "é" * 51, "client_msg_id": "m"}), "too_large"),
        ("x" * 10_000, "too_large"),
        (json.dumps({"type": "resume", "last_seq": -1}), "bad_frame"),
        (json.dumps({"type": "resume", "last_seq": True}), "bad_frame"),
        (b"\xff\xfe", "bad_json"),
    ],
)
def test_bad_frames_raise_with_a_stable_code(data: str | bytes, code: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(data, LIMIT)
    assert info.value.code == code


def test_too_large_text_names_the_client_msg_id() -> None:
    with pytest.raises(FrameError) as info:
        parse({"type": "message", "text": "a" * 101, "client_msg_id": "m9"})
    assert info.value.client_msg_id == "m9"
    frame = json.loads(error_frame(info.value.code, info.value.message, "m9"))
    assert frame["client_msg_id"] == "m9"


def test_lone_surrogates_are_replaced_not_rejected() -> None:
    frame = parse_client_frame('{"type":"message","text":"a\\ud800b","client_msg_id":"m"}', LIMIT)
    assert isinstance(frame, MessageFrame)
    frame.text.encode("utf-8")  # encodable now


def test_server_frames() -> None:
    assert json.loads(ack_frame("m1", "e1", 3)) == {
        "type": "ack", "client_msg_id": "m1", "event_id": "e1", "seq": 3}
    reply = {"event_id": "e1.r", "seq": 2, "payload": {
        "text": "hello", "client_msg_id": "m1", "quick_replies": ["yes"], "sources": [],
        "sender": "bot"}}
    assert json.loads(reply_frame(reply)) == {
        "type": "reply", "text": "hello", "in_reply_to": "m1", "event_id": "e1.r", "seq": 2,
        "sender": "bot", "quick_replies": ["yes"]}
