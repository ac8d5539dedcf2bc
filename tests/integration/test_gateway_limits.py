"""Rate limits on two real gateways sharing one Redis Cluster: a user's burst is spent on
either gateway, refused messages are not published, and the connection stays open."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets
from aiokafka import AIOKafkaConsumer
from redis.asyncio.cluster import RedisCluster

from gateway import metrics
from gateway.limits import Limits, Rate, RateLimiter
from gateway.server import Gateway
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.security import aiokafka_sasl, kafka_credentials
from streams.topics import CHAT_INBOUND
from tests.tenants import AuthTenant, put_tenants, test_tenant_config, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _tenant_t(tenant: AuthTenant) -> AuthTenant:
    """Tenant ``t`` exists: every socket here authenticates as one of its users."""
    return tenant

BURST = 10  # the default tier's: 60 a minute, 10 at once


def start_pair(settings: Settings) -> tuple[Gateway, Gateway]:
    return (Gateway(settings.replace(gateway_port=0, gateway_id="gw-a")),
            Gateway(settings.replace(gateway_port=0, gateway_id="gw-b")))


@pytest_asyncio.fixture
async def gateways(settings: Settings) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateways whose default tier refills one message a minute: a burst of 10 sent one
    at a time, each waiting for its ack, cannot be refilled during the test."""
    pair = start_pair(settings.replace(rate_default="1:10"))
    for gateway in pair:
        await gateway.start()
    for gateway in pair:
        await gateway.wait_ready()
    yield pair
    for gateway in pair:
        await gateway.close()


async def answer(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return frame


def message(msg_id: str) -> str:
    return json.dumps({"type": "message", "text": "hi", "client_msg_id": msg_id})


async def send(ws: Any, msg_id: str) -> dict[str, Any]:
    await ws.send(message(msg_id))
    return await answer(ws)


async def published_by(settings: Settings, user: str) -> list[str]:
    """The client_msg_ids of ``user``'s events on chat.inbound (read until 2 s of quiet)."""
    consumer = AIOKafkaConsumer(settings.topic(CHAT_INBOUND),
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **aiokafka_sasl(kafka_credentials(settings)))
    codec = codec_for("chat_message")
    await consumer.start()
    found: list[str] = []
    try:
        while batches := await consumer.getmany(timeout_ms=2000):
            for records in batches.values():
                events = [codec.decode(r.value) for r in records]
                found += [e["payload"]["client_msg_id"] for e in events if e["user_id"] == user]
    finally:
        await consumer.stop()
    return found


def ws_url(gateway: Gateway, user: str, conversation: str) -> str:
    return (f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t', user)}"
            f"&conversation={conversation}")


@pytest.mark.parametrize("last_on", [0, 1])
async def test_the_message_after_the_burst_is_refused_on_either_gateway(
    gateways: tuple[Gateway, Gateway], settings: Settings, last_on: int,
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with websockets.connect(ws_url(gateways[0], user, f"{user}-a")) as on_a, \
            websockets.connect(ws_url(gateways[1], user, f"{user}-b")) as on_b:
        sockets = (on_a, on_b)
        for ws in sockets:
            assert (await answer(ws))["type"] == "welcome"
        # The burst, spread over both gateways (and two conversations of the same user).
        acks = [await send(sockets[i % 2], f"m{i}") for i in range(BURST)]
        assert [a["type"] for a in acks] == ["ack"] * BURST, acks

        refused = await send(sockets[last_on], "over")
        assert (refused["type"], refused["code"], refused["client_msg_id"]) == \
            ("error", "rate_limited", "over")
        assert 0 < refused["retry_after"] <= 60  # one interval at one a minute
        assert (await send(sockets[1 - last_on], "also-over"))["code"] == "rate_limited"
        for ws in sockets:  # both connections stay open
            await ws.send(json.dumps({"type": "ping"}))
            assert (await answer(ws))["type"] == "pong"

        # Another user of the same tenant is not affected.
        other = f"o-{user}"
        async with websockets.connect(ws_url(gateways[last_on], other, other)) as ws:
            await answer(ws)
            assert (await send(ws, "o0"))["type"] == "ack"

    # Nothing refused was published.
    assert sorted(await published_by(settings, user)) == sorted(f"m{i}" for i in range(BURST))


async def test_the_default_tier_lets_ten_through_at_once_and_refuses_the_eleventh(
    settings: Settings,
) -> None:
    """The settings' own tier (60 a minute, burst 10), eleven messages sent at once over
    two gateways: ten acks, one refusal that may be retried within a second."""
    pair = start_pair(settings)
    for gateway in pair:
        await gateway.start()
    try:
        for gateway in pair:
            await gateway.wait_ready()
        user = f"u-{uuid.uuid4().hex[:8]}"
        async with websockets.connect(ws_url(pair[0], user, f"{user}-a")) as on_a, \
                websockets.connect(ws_url(pair[1], user, f"{user}-b")) as on_b:
            await asyncio.gather(answer(on_a), answer(on_b))
            await asyncio.gather(*(on_a.send(message(f"a{i}")) for i in range(6)),
                                 *(on_b.send(message(f"b{i}")) for i in range(5)))
            frames = [await answer(on_a) for _ in range(6)]
            frames += [await answer(on_b) for _ in range(5)]
    finally:
        for gateway in pair:
            await gateway.close()
    refused = [f for f in frames if f["type"] == "error"]
    assert sum(f["type"] == "ack" for f in frames) == BURST, frames
    assert [f["code"] for f in refused] == ["rate_limited"]
    assert 0 < refused[0]["retry_after"] <= 1


async def test_a_tenant_limit_holds_for_all_its_users_together(
    redis_cluster: RedisCluster,
) -> None:
    limiter = RateLimiter(redis_cluster)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    limits = Limits({"default": Rate(60, 2)}, tenant=Rate(60, 5))
    try:
        decisions = await asyncio.gather(*(
            limiter.check(tenant, f"u{i % 4}", "default", limits) for i in range(12)
        ))  # fmt: skip
        assert sum(d.allowed for d in decisions) == 5  # the tenant's burst, not 4 users' 8
        assert {d.limited_by for d in decisions if not d.allowed} <= {"user", "tenant"}
        # A refused message spent nothing: the user with a message left still has it.
        per_user = {f"u{i}": sum(d.allowed for j, d in enumerate(decisions) if j % 4 == i)
                    for i in range(4)}
        assert all(n <= 2 for n in per_user.values())
    finally:
        await limiter.close()


async def test_redis_unreachable_lets_messages_through_and_counts_them() -> None:
    before = metrics.RATE_LIMIT_UNAVAILABLE._value.get()
    dead = RedisCluster(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                        require_full_coverage=False)
    limiter = RateLimiter(dead)
    try:
        decision = await limiter.check("t", "u", "default", Limits({"default": Rate(1, 1)}))
    finally:
        await limiter.close()
    assert decision.allowed
    assert metrics.RATE_LIMIT_UNAVAILABLE._value.get() == before + 1


async def test_a_tenants_own_rate_replaces_the_gateways(
    gateways: tuple[Gateway, Gateway], settings: Settings,
) -> None:
    """`parley tenant create --rate default=1:3`: that tenant's users get a burst of 3 where
    the gateways' settings give 10; another tenant keeps the settings'."""
    await put_tenants(settings.redis_nodes, [test_tenant_config("strict",
                                                                rates={"default": "1:3"})])
    user = f"u-{uuid.uuid4().hex[:8]}"
    url = (f"ws://127.0.0.1:{gateways[0].port}/ws?token={token_for('strict', user)}"
           f"&conversation={user}")
    async with websockets.connect(url) as ws:
        await answer(ws)
        frames = [await send(ws, f"m{i}") for i in range(4)]
    assert [f["type"] for f in frames] == ["ack", "ack", "ack", "error"]
    assert frames[3]["code"] == "rate_limited"


async def test_a_flood_of_refused_messages_does_not_hold_other_users_messages(
        settings: Settings) -> None:
    """A busy gateway holds messages for its linger (gateway/sequences.py). A user it has
    already refused is answered before that hold and does not count as traffic, so a
    flood does not make the gateway busy and slow down everybody else."""
    gateway = Gateway(settings.replace(gateway_port=0, rate_default="1:2", rate_tenant="off",
                                       gateway_busy_rate=40, gateway_busy_linger_ms=3000))
    await gateway.start()
    run = uuid.uuid4().hex[:8]
    try:
        await gateway.wait_ready()
        async with websockets.connect(ws_url(gateway, "flooder", f"{run}-f")) as flooder, \
                websockets.connect(ws_url(gateway, "other", f"{run}-o")) as other:
            await answer(flooder)  # welcome
            await answer(other)
            # The burst of 2, then the first refusal, which only Redis can tell: 3 arrivals
            # in 100 ms, under the 4 that make the gateway busy.
            assert [(await send(flooder, f"m{n}"))["type"] for n in range(3)] == \
                ["ack", "ack", "error"]
            await asyncio.sleep(0.3)  # that window is over
            for n in range(3, 103):  # refused here, at once
                await flooder.send(message(f"m{n}"))
            started = asyncio.get_running_loop().time()
            ack = await send(other, "o1")
            waited = asyncio.get_running_loop().time() - started
            refusals = [await answer(flooder) for _ in range(100)]
    finally:
        await gateway.close()
    assert ack["type"] == "ack"
    assert waited < 1.5, f"held for the busy linger ({waited:.2f} s): the flood counted"
    assert {(f["type"], f["code"]) for f in refusals} == {("error", "rate_limited")}
