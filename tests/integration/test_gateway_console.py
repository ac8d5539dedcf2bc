"""The agent console's HTTP API on a real gateway, Kafka and Redis Cluster, tried as
those who may not use it would: no token, a user's token, an agent of another tenant,
a second agent. The test plays the conversation agent: it puts a handoff request in the
tenant's queue (streams/handoff.py, as agents/dialogue/handoff.py does) and publishes
the user's relayed message to ``handoff.events``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from confluent_kafka import Producer

from gateway.server import Gateway
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.handoff import HandoffRecord, HandoffStore, TranscriptLine, handoff_event
from streams.security import kafka_client_config, redis_credentials
from streams.state import connect_cluster
from streams.topics import HANDOFF_EVENTS
from tests.tenants import AuthTenant, put_tenants, test_tenant_config, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

QUEUE = "/console/api/queue"


def conv_path(conversation: str, command: str) -> str:
    return f"/console/api/conversations/{conversation}/{command}"


@pytest_asyncio.fixture
async def gateway(settings: Settings, tenant: AuthTenant) -> AsyncIterator[Gateway]:
    await put_tenants(settings.redis_nodes, [test_tenant_config("t2")])
    server = Gateway(settings.replace(gateway_port=0))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.api.url, timeout=20) as client:
        yield client


async def request_handoff(settings: Settings, tenant_id: str, reason: str = "flow human_handoff"
                          ) -> str:
    """A conversation waiting for an agent, as the conversation agent queues one."""
    conversation = f"c-{uuid.uuid4().hex[:10]}"
    now = int(time.time() * 1000)
    redis = connect_cluster(settings.redis_startup_nodes, credentials=redis_credentials(settings))
    try:
        store = HandoffStore(redis, ttl_s=600)
        await store.enqueue(tenant_id, HandoffRecord(
            conversation, f"r-{conversation}", "u-1", "ws", reason, {"order_id": "777"}, now,
            transcript=(TranscriptLine("l1", "user", "I want a human", now - 10),
                        TranscriptLine("l2", "bot", "Transferring you", now - 5))),
            deadline_ms=now + 600_000)
    finally:
        await redis.aclose()
    return conversation


def agent(tenant_id: str = "t", who: str = "ann") -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(tenant_id, who, roles=['agent'])}"}


def error_of(answer: httpx.Response) -> str:
    body = answer.json()
    assert body["reason"], body
    return str(body["error"])


async def test_who_may_use_the_console(gateway: Gateway, http: httpx.AsyncClient,
                                       settings: Settings) -> None:
    conversation = await request_handoff(settings, "t")
    page = await http.get("/console")  # the page itself holds nothing: it signs in first
    assert page.status_code == 200 and "Agent console" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    for headers in ({}, {"Authorization": "Basic YWxhZGRpbjpvcGVu"},
                    {"Authorization": "Bearer not-a-jwt"},
                    {"Authorization": f"Bearer {token_for('t', 'ann', ttl_s=-120)}"}):
        refused = await http.get(QUEUE, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert error_of(refused) == "unauthorized"
        claim = await http.post(conv_path(conversation, "claim"), headers=headers)
        assert claim.status_code == 401
    # a token in the URL is not taken for the JSON calls (it would end up in logs)
    in_url = await http.get(QUEUE, params={"token": token_for("t", "ann", roles=["agent"])})
    assert in_url.status_code == 401

    user = {"Authorization": f"Bearer {token_for('t', 'u-1')}"}
    for answer in (await http.get(QUEUE, headers=user),
                   await http.post(conv_path(conversation, "claim"), headers=user),
                   await http.get("/console/api/events", headers=user)):
        assert answer.status_code == 403 and error_of(answer) == "forbidden"
        assert "agent" in answer.json()["reason"]
    # nothing was claimed by those attempts
    queue = (await http.get(QUEUE, headers=agent())).json()
    assert conversation in [r["conversation_id"] for r in queue["waiting"]]


async def test_an_agent_of_another_tenant_sees_and_does_nothing(
        gateway: Gateway, http: httpx.AsyncClient, settings: Settings) -> None:
    conversation = await request_handoff(settings, "t")
    eve = agent("t2", "eve")
    queue = (await http.get(QUEUE, headers=eve)).json()
    assert queue["tenant"] == "t2" and queue["waiting"] == [] and queue["held"] == []
    for command, body in (("claim", None), ("send", {"text": "hi"}), ("note", {"text": "x"}),
                          ("release", {}), ("close", None)):
        answer = await http.post(conv_path(conversation, command), headers=eve, json=body)
        assert answer.status_code == 404, (command, answer.text)
        assert error_of(answer) == "not_found"
    # t's agent still finds it waiting, untouched
    waiting = (await http.get(QUEUE, headers=agent())).json()["waiting"]
    [record] = [r for r in waiting if r["conversation_id"] == conversation]
    assert record["agent_id"] == ""


async def test_claim_talk_note_release_and_a_second_agent(
        gateway: Gateway, http: httpx.AsyncClient, settings: Settings) -> None:
    conversation = await request_handoff(settings, "t")
    ann, bob = agent("t", "ann"), agent("t", "bob")
    waiting = (await http.get(QUEUE, headers=ann)).json()["waiting"]
    record = next(r for r in waiting if r["conversation_id"] == conversation)
    assert record["reason"] == "flow human_handoff" and record["slots"] == {"order_id": "777"}
    assert [line["role"] for line in record["transcript"]] == ["user", "bot"]

    claimed = await http.post(conv_path(conversation, "claim"), headers=ann)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed"]["agent_id"] == "ann"
    second = await http.post(conv_path(conversation, "claim"), headers=bob)
    assert second.status_code == 409 and error_of(second) == "not_waiting"
    for command, body in (("send", {"text": "mine now"}), ("release", {}), ("close", None)):
        answer = await http.post(conv_path(conversation, command), headers=bob, json=body)
        assert answer.status_code == 409 and error_of(answer) == "not_holder", command

    sent = await http.post(conv_path(conversation, "send"), headers=ann,
                           json={"text": "Hello, I'm Ann"})
    assert sent.status_code == 200, sent.text
    noted = await http.post(conv_path(conversation, "note"), headers=ann,
                            json={"text": "wants a refund"})
    assert noted.status_code == 200
    held = (await http.get(QUEUE, headers=bob)).json()["held"]
    [mine] = [r for r in held if r["conversation_id"] == conversation]
    assert mine["agent_id"] == "ann"
    assert [(line["role"], line["text"]) for line in mine["transcript"]][-2:] == [
        ("agent", "Hello, I'm Ann"), ("note", "wants a refund")]

    # bad input: a clear 400, nothing done
    for content in (b"{not json", b"[1, 2]", json.dumps({"text": 5}).encode()):
        bad = await http.post(conv_path(conversation, "send"), headers=ann, content=content)
        assert bad.status_code == 400 and error_of(bad) == "invalid", bad.text
    empty = await http.post(conv_path(conversation, "send"), headers=ann, json={"text": "  "})
    assert empty.status_code == 400 and error_of(empty) == "invalid"
    huge = await http.post(conv_path(conversation, "send"), headers=ann,
                           json={"text": "x" * 100_000})
    assert huge.status_code == 413 and error_of(huge) == "too_large"
    bad_slots = await http.post(conv_path(conversation, "release"), headers=ann,
                                json={"slots": ["order_id"]})
    assert bad_slots.status_code == 400
    bad_id = await http.post(conv_path("bad id!", "claim"), headers=ann)
    assert bad_id.status_code in (400, 404)
    unknown = await http.post(conv_path(conversation, "delete"), headers=ann)
    assert unknown.status_code == 404

    released = await http.post(conv_path(conversation, "release"), headers=ann,
                               json={"slots": {"order_id": "12345"}})
    assert released.status_code == 200, released.text
    after = await http.post(conv_path(conversation, "send"), headers=ann, json={"text": "hi"})
    assert after.status_code == 409 and error_of(after) == "not_holder"
    queue = (await http.get(QUEUE, headers=ann)).json()
    assert all(r["conversation_id"] != conversation for r in (*queue["waiting"], *queue["held"]))


class Feed:
    """A console's live feed, read as the page's EventSource reads it."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http, self.token = http, token
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.status = 0
        self._task: asyncio.Task[None] | None = None
        self.opened = asyncio.Event()

    async def __aenter__(self) -> Feed:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with self.http.stream("GET", "/console/api/events",
                                    params={"token": self.token}) as response:
            self.status = response.status_code
            self.opened.set()
            name = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    await self.events.put((name, json.loads(line[6:])))

    async def next(self, timeout: float = 20) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def next_of(self, kind: str, timeout: float = 20) -> dict[str, Any]:
        while True:
            name, data = await self.next(timeout)
            if name == "handoff" and data["type"] == kind:
                return data


def relay_user_message(settings: Settings, tenant_id: str, conversation: str, text: str) -> None:
    """What the conversation agent publishes for a user's message to a held conversation."""
    topic = settings.topic(HANDOFF_EVENTS)
    value = codec_for("handoff_event", settings.schema_registry_url, topic).encode(handoff_event(
        f"e-{uuid.uuid4().hex}", tenant_id, conversation, "user_message",
        timestamp_ms=int(time.time() * 1000), request_id=f"r-{conversation}", user_id="u-1",
        agent_id="ann", text=text, in_reply_to=f"m-{uuid.uuid4().hex[:6]}"))
    # partitioned as the conversation agent's producer and the gateway's do (murmur2)
    producer = Producer(kafka_client_config(settings, partitioner="murmur2_random"))
    producer.produce(topic, key=conversation, value=value)
    assert producer.flush(10) == 0


async def test_the_live_feed_shows_the_tenants_handoffs_only(
        gateway: Gateway, http: httpx.AsyncClient, settings: Settings) -> None:
    anonymous = await http.get("/console/api/events")
    assert anonymous.status_code == 401 and error_of(anonymous) == "unauthorized"
    as_user = await http.get("/console/api/events", params={"token": token_for("t", "u-1")})
    assert as_user.status_code == 403

    conversation = await request_handoff(settings, "t")
    ann = token_for("t", "ann", roles=["agent"])
    async with Feed(http, ann) as feed, \
            Feed(http, token_for("t2", "eve", roles=["agent"])) as other:
        assert feed.status == 200 and await feed.next() == ("hello", {"tenant": "t",
                                                                      "agent": "ann"})
        assert (await other.next())[0] == "hello"
        claimed = await http.post(conv_path(conversation, "claim"), headers=agent())
        assert claimed.status_code == 200
        event = await feed.next_of("claimed")
        assert event["conversation_id"] == conversation and event["agent_id"] == "ann"
        await asyncio.to_thread(relay_user_message, settings, "t", conversation,
                                "my parcel never arrived")
        said = await feed.next_of("user_message")
        assert said["text"] == "my parcel never arrived"
        assert said["conversation_id"] == conversation
        # the other tenant's agent got nothing of it
        with pytest.raises(TimeoutError):
            await other.next(timeout=1.5)
        assert gateway.console.streams == 2
    # a closed page's feed is let go
    for _ in range(100):
        if gateway.console.streams == 0:
            break
        await asyncio.sleep(0.1)
    assert gateway.console.streams == 0


async def test_closing_ends_the_hold_and_is_announced(
        gateway: Gateway, http: httpx.AsyncClient, settings: Settings) -> None:
    conversation = await request_handoff(settings, "t")
    async with Feed(http, token_for("t", "ann", roles=["agent"])) as feed:
        await feed.next()
        assert (await http.post(conv_path(conversation, "claim"), headers=agent())
                ).status_code == 200
        closed = await http.post(conv_path(conversation, "close"), headers=agent())
        assert closed.status_code == 200, closed.text
        event = await feed.next_of("closed")
        assert event["conversation_id"] == conversation and event["agent_id"] == "ann"
    again = await http.post(conv_path(conversation, "close"), headers=agent())
    assert again.status_code == 409 and error_of(again) == "not_holder"
    reclaim = await http.post(conv_path(conversation, "claim"), headers=agent("t", "bob"))
    assert reclaim.status_code == 409 and error_of(reclaim) == "not_waiting"
    queue = (await http.get(QUEUE, headers=agent())).json()
    assert all(r["conversation_id"] != conversation for r in (*queue["waiting"], *queue["held"]))
async def test_a_gateway_stops_promptly_with_consoles_open(
        gateway: Gateway, http: httpx.AsyncClient) -> None:
    async with Feed(http, token_for("t", "ann", roles=["agent"])) as feed:
        assert (await feed.next())[0] == "hello"
        began = time.monotonic()
        await asyncio.wait_for(gateway.close(), 15)
        # the live feed ended at once instead of holding the API server's shutdown
        assert time.monotonic() - began < 5
        assert gateway.console.streams == 0
