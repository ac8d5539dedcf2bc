"""The agent console's pure parts: who is an agent, what a command may carry, and what
the page gets of records and events (gateway/console.py). The HTTP side runs against a
real gateway in tests/integration/test_gateway_console.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from gateway.auth import Principal
from gateway.console import (
    FEED_BACKLOG,
    Agent,
    Console,
    ConsoleError,
    agent_of,
    event_json,
    parse_command_body,
    record_json,
    sse_frame,
    token_expiry,
)
from streams.handoff import HandoffRecord, TranscriptLine, handoff_event
from tests.tenants import token_for


def principal(*roles: str) -> Principal:
    return Principal("t1", "ann", "default", frozenset(roles))


def test_only_a_token_with_the_agent_role_is_an_agent() -> None:
    assert agent_of(principal("agent")) == Agent("t1", "ann")
    assert agent_of(principal("supervisor", "agent")) == Agent("t1", "ann")
    for roles in ((), ("admin",), ("Agent",), ("agents",)):
        with pytest.raises(ConsoleError) as refused:
            agent_of(principal(*roles))
        assert refused.value.status == 403 and refused.value.code == "forbidden"
        assert "agent" in refused.value.reason


@pytest.mark.parametrize(("command", "raw", "problem"), [
    ("send", b"", "needs"),
    ("send", b'{"text": 5}', "needs"),
    ("note", b'{"txt": "hi"}', "needs"),
    ("send", b"{not json", "not JSON"),
    ("send", b"\xff\xfe", "not JSON"),
    ("claim", b"[1]", "JSON object"),
    ("release", b'{"slots": ["order_id"]}', "slots"),
    ("release", b'{"slots": "order_id=1"}', "slots"),
    ("release", b'{"slots": []}', "slots"),
])
def test_a_malformed_command_body_is_a_400_saying_what_is_wrong(
        command: str, raw: bytes, problem: str) -> None:
    with pytest.raises(ConsoleError) as refused:
        parse_command_body(raw, command)
    assert refused.value.status == 400 and refused.value.code == "invalid"
    assert problem in refused.value.reason


def test_a_well_formed_command_body_is_taken_as_sent() -> None:
    assert parse_command_body(b"", "claim") == {}
    assert parse_command_body(b"  ", "close") == {}
    assert parse_command_body(b'{"text": "hi"}', "send") == {"text": "hi"}
    assert parse_command_body(b'{"slots": {"a": 1}}', "release") == {"slots": {"a": 1}}
    assert parse_command_body(b"{}", "release") == {}
    assert parse_command_body(b'{"slots": null}', "release") == {"slots": None}


def test_a_record_is_shown_with_its_slots_and_transcript() -> None:
    record = HandoffRecord("c1", "r1", "u1", "ws", "flow human_handoff", {"order_id": "7"},
                           1000, "ann", 2000,
                           (TranscriptLine("l1", "user", "help", 900),
                            TranscriptLine("l2", "note", "vip", 950, "bob")))
    shown = record_json(record)
    assert shown["slots"] == {"order_id": "7"} and shown["agent_id"] == "ann"
    assert shown["transcript"] == [
        {"id": "l1", "role": "user", "text": "help", "agent_id": "", "at_ms": 900},
        {"id": "l2", "role": "note", "text": "vip", "agent_id": "bob", "at_ms": 950}]
    json.dumps(shown)  # the page gets it as JSON


def test_an_event_is_shown_without_internals_and_with_a_numeric_time() -> None:
    event = handoff_event("e1", "t1", "c1", "user_message", timestamp_ms=0, agent_id="ann",
                          text="hi", slots={"a": 1}, in_reply_to="m1")
    event["timestamp"] = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)  # as the codec decodes it
    shown = event_json(event)
    assert shown["timestamp"] == 1796655600000
    assert shown["slots"] == {"a": 1} and shown["text"] == "hi"
    assert "event_id" not in shown and "in_reply_to" not in shown
    assert event_json({**event, "slots_json": "not json"})["slots"] == {}


def test_an_event_with_newlines_is_one_server_sent_event() -> None:
    frame = sse_frame("handoff", {"text": "line one\nline two\n\ndata: forged"})
    text = frame.decode()
    assert text.endswith("\n\n") and text.count("\n\n") == 1
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "event: handoff" and len(lines) == 2
    assert json.loads(lines[1].removeprefix("data: "))["text"].endswith("data: forged")


class FakeFeed:
    """What the console uses of HandoffFeed: per-tenant subscriptions."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[Any]] = {}

    def subscribe(self, tenant_id: str, on_event: Any) -> Any:
        self.subscribers.setdefault(tenant_id, []).append(on_event)
        return lambda: self.subscribers[tenant_id].remove(on_event)

    def publish(self, tenant_id: str, **fields: Any) -> None:
        event = handoff_event(f"e-{fields.get('text', '')}", tenant_id, "c1",
                              fields.pop("type_", "user_message"), timestamp_ms=1, **fields)
        for on_event in list(self.subscribers.get(tenant_id, ())):
            on_event(event)


def console_with(feed: FakeFeed, heartbeat_s: float = 15.0) -> Console:
    return Console(cast(Any, None), cast(Any, None), cast(Any, feed), heartbeat_s=heartbeat_s)


async def read(stream: AsyncIterator[bytes], count: int) -> list[bytes]:
    return [await asyncio.wait_for(anext(stream), 2) for _ in range(count)]


@pytest.mark.asyncio
async def test_a_feed_gets_its_tenants_events_only_and_lets_go_when_it_ends() -> None:
    feed = FakeFeed()
    console = console_with(feed)
    stream = console._stream(Agent("t1", "ann"))
    retry, hello = await read(stream, 2)
    assert retry.startswith(b"retry: ") and b"event: hello" in hello
    feed.publish("t2", text="not yours")
    feed.publish("t1", text="yours")
    [frame] = await read(stream, 1)
    assert b'"text": "yours"' in frame and console.streams == 1
    await stream.aclose()  # the page went away
    assert feed.subscribers["t1"] == [] and console.streams == 0


@pytest.mark.asyncio
async def test_an_idle_feed_sends_keepalives_and_a_closing_console_ends_it() -> None:
    console = console_with(FakeFeed(), heartbeat_s=0.05)
    stream = console._stream(Agent("t1", "ann"))
    await read(stream, 2)
    assert await read(stream, 2) == [b": keepalive\n\n"] * 2
    await console.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 2)
    assert console.streams == 0


@pytest.mark.asyncio
async def test_a_feed_too_far_behind_ends_so_that_the_page_reconnects_and_reloads() -> None:
    feed = FakeFeed()
    console = console_with(feed)
    stream = console._stream(Agent("t1", "ann"))
    await read(stream, 2)
    for i in range(FEED_BACKLOG + 5):
        feed.publish("t1", text=f"m{i}")
    frames = [frame async for frame in stream]  # ends by itself, at once
    assert frames == []
    assert feed.subscribers["t1"] == []


def test_the_token_expiry_is_read_from_the_token() -> None:
    token = token_for("t1", "ann", roles=["agent"], ttl_s=60)
    assert abs(token_expiry(token) - (time.time() + 60)) < 5
    assert token_expiry("not a token") == float("inf")


@pytest.mark.asyncio
async def test_a_feed_ends_when_its_token_expires() -> None:
    now = [1000.0]
    console = Console(cast(Any, None), cast(Any, None), cast(Any, FakeFeed()),
                      clock=lambda: now[0], heartbeat_s=0.05)
    stream = console._stream(Agent("t1", "ann", valid_until=1000.2))
    await read(stream, 2)
    assert await read(stream, 1) == [b": keepalive\n\n"]  # still valid
    now[0] = 1000.3
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 2)
    assert console.streams == 0
