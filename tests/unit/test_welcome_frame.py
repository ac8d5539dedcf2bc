"""The welcome frame tells a chat page its text limit only when the gateway passes it."""

from __future__ import annotations

import json

from gateway.protocol import welcome_frame


def test_the_welcome_frame_carries_the_text_limit_when_given() -> None:
    frame = json.loads(welcome_frame("demo", "u1", "c1", "gw", max_text_bytes=8192))
    assert frame == {"type": "welcome", "tenant_id": "demo", "user_id": "u1",
                     "conversation_id": "c1", "gateway": "gw", "max_text_bytes": 8192}


def test_the_welcome_frame_omits_the_limit_otherwise() -> None:
    frame = json.loads(welcome_frame("demo", "u1", "c1", "gw"))
    assert "max_text_bytes" not in frame
    assert frame["conversation_id"] == "c1"


def test_the_welcome_frame_carries_the_degradation_level_when_known() -> None:
    assert json.loads(welcome_frame("demo", "u1", "c1", "gw", level=4))[
        "degradation_level"] == 4
    assert "degradation_level" not in json.loads(welcome_frame("demo", "u1", "c1", "gw"))
