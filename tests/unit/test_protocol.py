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


MESSAGE_PREFIX = '{"type":"message","client_msg_id":"m","text":'


@pytest.mark.parametrize(
    "data",
    [
        "[" * 10_000 + "]" * 10_000,  # nested 10,000 deep
        '{"type":"ping","x":' + '{"a":' * 5_000 + "1" + "}" * 5_001,
        '{"type":"resume","last_seq":' + "9" * 5_000 + "}",  # Python's int limit: 4,300
        MESSAGE_PREFIX + '"hi","n":' + "1" * 5_000 + "}",
        '{"type":"resume","last_seq":NaN}',
        '{"type":"ping","x":Infinity}',
        '{"type":"ping","x":-Infinity}',
        b'{"type":"ping","x":"\xff"}',  # invalid UTF-8
        b"\xed\xa0\x80",  # a UTF-8-encoded surrogate: not UTF-8 either
        '{"type":"message"',  # cut short
    ],
)
def test_malformed_json_is_bad_json_never_another_error(data: str | bytes) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(data, 8192)
    assert info.value.code == "bad_json"
    json.loads(error_frame(info.value.code, info.value.message))  # and can be answered


def test_a_huge_array_is_too_large_or_a_bad_frame() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame("[" + "0," * 1_000_000 + "0]", 8192)
    assert info.value.code == "too_large"
    with pytest.raises(FrameError) as info:
        parse_client_frame(MESSAGE_PREFIX + "[" + "0," * 5_000 + "0]}", 8192)
    assert info.value.code == "bad_frame"


def test_the_text_limit_counts_utf8_bytes_not_how_the_frame_writes_them() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in "a" * 8192)  # 6 characters a byte
    frame = parse_client_frame(f'{MESSAGE_PREFIX}"{escaped}"}}', 8192)
    assert frame == MessageFrame("a" * 8192, "m")
    emoji = "\\ud83d\\ude00" * 2048  # 12 characters for 4 bytes
    assert isinstance(parse_client_frame(f'{MESSAGE_PREFIX}"{emoji}"}}', 8192), MessageFrame)
    with pytest.raises(FrameError) as info:
        parse_client_frame(f'{MESSAGE_PREFIX}"{escaped}b"}}', 8192)
    assert info.value.code == "too_large"


def test_a_client_msg_id_with_a_lone_surrogate_is_refused_and_not_echoed() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame('{"type":"message","text":"hi","client_msg_id":"m\\udc00"}', LIMIT)
    assert (info.value.code, info.value.client_msg_id) == ("bad_frame", None)


def test_an_unknown_type_of_any_json_type_is_named_safely() -> None:
    for kind in ([1] * 100, {"a": 1}, None, 3.5, "\ud800" * 50):
        with pytest.raises(FrameError) as info:
            parse_client_frame(json.dumps({"type": kind}), LIMIT)
        assert info.value.code == "unknown_type"
        error_frame(info.value.code, info.value.message).encode("utf-8")


def test_resume_beyond_a_64_bit_sequence_is_a_bad_frame() -> None:
    with pytest.raises(FrameError) as info:
        parse({"type": "resume", "last_seq": 2**63})
    assert info.value.code == "bad_frame"
    assert parse({"type": "resume", "last_seq": 2**63 - 1}) == ResumeFrame(2**63 - 1)
