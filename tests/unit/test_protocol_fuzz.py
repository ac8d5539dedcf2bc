"""Hypothesis fuzzing of the frame parser: whatever a client sends, the parser returns a
frame or raises FrameError, and what the gateway sends back can always be encoded."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    ClientFrame,
    FrameError,
    MessageFrame,
    ResumeFrame,
    ack_frame,
    error_frame,
    parse_client_frame,
)

LIMIT = 256

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "resume", "typing", "ping", "other"]) | json_values},
    optional={"text": st.text() | json_values, "client_msg_id": st.text() | json_values,
              "last_seq": st.integers() | json_values},
)


def answer(data: str | bytes) -> ClientFrame | None:
    """What the gateway does with a frame, up to the bytes it sends back."""
    try:
        frame = parse_client_frame(data, LIMIT)
    except FrameError as exc:
        assert exc.code in {"bad_json", "bad_frame", "unknown_type", "empty_text", "too_large"}
        error_frame(exc.code, exc.message, exc.client_msg_id).encode("utf-8")
        return None
    if isinstance(frame, MessageFrame):
        assert 0 < len(frame.text.encode("utf-8")) <= LIMIT
        ack_frame(frame.client_msg_id, "e", 1).encode("utf-8")
    if isinstance(frame, ResumeFrame):
        assert 0 <= frame.last_seq < 2**63
    return frame


@given(st.text(max_size=2000))
def test_any_text_is_a_frame_or_a_frame_error(data: str) -> None:
    answer(data)


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_frame_or_a_frame_error(data: bytes) -> None:
    answer(data)


@given(json_values)
def test_any_json_value_is_a_frame_or_a_frame_error(value: object) -> None:
    answer(json.dumps(value))


@settings(max_examples=300)
@given(frame_like, st.booleans())
def test_frame_shaped_objects_are_a_frame_or_a_frame_error(obj: dict[str, object],
                                                           escaped: bool) -> None:
    answer(json.dumps(obj, ensure_ascii=escaped))


@given(st.lists(st.sampled_from(['{"a":', "[", "]", "}", '"x"', ",", "1", "NaN", "\\ud800",
                                 '"\\ud800"', "9" * 50, "-", "e", ".", " ", "\x00"]),
                max_size=400))
def test_jumbled_json_tokens_are_a_frame_or_a_frame_error(tokens: list[str]) -> None:
    answer("".join(tokens))
