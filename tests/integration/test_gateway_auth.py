"""Authentication, origins and conversation ownership on a real gateway, Kafka and Redis
Cluster, tried as an attacker would: the test plays the worker where replies are needed.

Every refusal is read as the HTTP answer to the /ws handshake (status and reason);
every accepted path is checked to reach the socket it should and no other.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
import websockets
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from redis.asyncio.cluster import RedisCluster
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from gateway.auth import Authenticator
from gateway.server import Gateway
from gateway.tenants import CACHE_TTL_S, TenantStore, hash_api_key
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.keys import ConversationKeys
from streams.security import kafka_client_config
from streams.state import connect_cluster
from streams.topics import CHAT_INBOUND, CHAT_OUTBOUND
from tests.tenants import (
    TEST_SECRET,
    AuthTenant,
    Jwks,
    put_tenants,
    test_tenant_config,
    token_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

RETENTION_S = 120  # the "brief" tenant's (the deployment keeps state 30 days)


@pytest_asyncio.fixture
async def gateway(settings: Settings, tenant: AuthTenant) -> AsyncIterator[Gateway]:
    other = test_tenant_config("t2")
    shop = test_tenant_config("shop", origins=("https://shop.example",))
    brief = test_tenant_config("brief", retention_s=RETENTION_S)
    await put_tenants(settings.redis_nodes, [other, shop, brief])
    server = Gateway(settings.replace(gateway_port=0))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


def base(gateway: Gateway) -> str:
    return f"ws://127.0.0.1:{gateway.port}"


def url(gateway: Gateway, conversation: str, token: str | None = None,
        **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"conversation": conversation, **params}.items())
    return f"{base(gateway)}/ws?{query}" + (f"&token={token}" if token else "")


async def refusal(target: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The status and reason of a refused handshake (fails if it is accepted)."""
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(target, additional_headers=headers):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode()


async def welcome(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert frame["type"] == "welcome", frame
    return frame


async def nothing_within(ws: ClientConnection, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        frame = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected frame {frame!r}")


def bot_reply(tenant_id: str, conversation: str, seq: int, text: str) -> bytes:
    return codec_for("bot_reply").encode({
        "event_id": f"r-{uuid.uuid4().hex}", "tenant_id": tenant_id,
        "conversation_id": conversation, "user_id": "u", "channel": "ws", "seq": seq,
        "timestamp": int(time.time() * 1000), "trace_id": "tr", "reply_route": "",
        "payload": {"text": text, "in_reply_to": f"e-{seq}", "client_msg_id": f"m{seq}"},
    })  # fmt: skip


def publish_reply(settings: Settings, value: bytes, conversation: str) -> None:
    producer = Producer(kafka_client_config(settings))
    producer.produce(settings.topic(CHAT_OUTBOUND), key=conversation, value=value)
    assert producer.flush(10) == 0


def inbound_events(settings: Settings) -> list[dict[str, Any]]:
    name = settings.topic(CHAT_INBOUND)
    consumer = Consumer({**kafka_client_config(settings),
                         "group.id": f"audit-{uuid.uuid4().hex[:8]}",
                         "enable.partition.eof": True})
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        pending, events = set(partitions), []
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if (error := msg.error()) is None:
                events.append(codec_for("chat_message").decode(msg.value()))
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
        return events
    finally:
        consumer.close()


async def send(ws: ClientConnection, text: str, client_msg_id: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "message", "text": text, "client_msg_id": client_msg_id}))
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return frame


# -- credentials -------------------------------------------------------------------------


async def test_a_handshake_without_credentials_is_refused_with_a_reason(
        gateway: Gateway) -> None:
    status, reason = await refusal(url(gateway, "c1"))
    assert status == 401 and "missing credentials" in reason
    # Naming a tenant and a user in the URL is not a credential.
    status, reason = await refusal(url(gateway, "c1", tenant="t", user="ann"))
    assert status == 401


@pytest.mark.parametrize(("claims", "reason"), [
    ({"ttl_s": -120}, "token expired"),
    ({"tier": "premium", "roles": ["x"]}, None),
])  # fmt: skip
async def test_tokens_are_checked_in_the_handshake(
        gateway: Gateway, claims: dict[str, Any], reason: str | None) -> None:
    token = token_for("t", "ann", **claims)
    if reason is not None:
        status, body = await refusal(url(gateway, "c-tok", token))
        assert (status, body.strip()) == (401, reason)
        return
    async with websockets.connect(url(gateway, "c-tok", token)) as ws:
        frame = await welcome(ws)
    assert (frame["tenant_id"], frame["user_id"]) == ("t", "ann")


async def test_a_bearer_header_works_like_the_token_parameter(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {token_for('t', 'ann')}"}
    async with websockets.connect(url(gateway, "c-bearer"), additional_headers=headers) as ws:
        assert (await welcome(ws))["user_id"] == "ann"
    status, reason = await refusal(url(gateway, "c-bearer"), {"Authorization": "Bearer nope"})
    assert (status, reason.strip()) == (401, "malformed token")


async def test_a_token_signed_with_another_tenants_secret_is_refused(
        gateway: Gateway, settings: Settings) -> None:
    forged = test_tenant_config("t2", secret="another-secret-of-at-least-32-bytes!")
    await put_tenants(settings.redis_nodes, [forged])
    # t2's gateway cache may hold the old configuration for a few seconds.
    await asyncio.sleep(CACHE_TTL_S)
    status, reason = await refusal(url(gateway, "c-x", token_for("t2", "mallory")))
    assert (status, reason.strip()) == (401, "token signature does not verify")


async def test_rs256_tokens_verify_with_the_tenants_jwks_and_its_rotation(
        gateway: Gateway, settings: Settings) -> None:
    with Jwks() as idp:
        config = test_tenant_config("rsco", jwks_url=idp.url, algorithms=("RS256",))
        await put_tenants(settings.redis_nodes, [config])
        gateway.auth = Authenticator(gateway.tenants, jwks_cooldown_s=0)  # rotation at once

        def rs_token(key: Any, kid: str, user: str) -> str:
            now = int(time.time())
            return jwt.encode({"iss": config.jwt.issuer, "aud": config.jwt.audience,
                               "sub": user, "tenant": "rsco", "nbf": now, "exp": now + 60},
                              key, algorithm="RS256", headers={"kid": kid})

        old = idp.add("2026-11")
        async with websockets.connect(url(gateway, "c-rs", rs_token(old, "2026-11", "ann"))
                                      ) as ws:
            assert (await welcome(ws))["tenant_id"] == "rsco"
        new = idp.add("2026-12")
        del idp.keys["2026-11"]
        async with websockets.connect(url(gateway, "c-rs", rs_token(new, "2026-12", "ann"))
                                      ) as ws:
            assert (await welcome(ws))["user_id"] == "ann"
        status, reason = await refusal(url(gateway, "c-rs", rs_token(new, "nope", "ann")))
        assert (status, reason.strip()) == (401, "token signing key (kid) is unknown")
        # An HS256 token, even one signed with the test secret, is not on its allow-list.
        hs = jwt.encode({"iss": config.jwt.issuer, "aud": config.jwt.audience, "sub": "ann",
                         "tenant": "rsco", "nbf": int(time.time()),
                         "exp": int(time.time()) + 60}, TEST_SECRET, algorithm="HS256")
        status, reason = await refusal(url(gateway, "c-rs", hs))
        assert (status, reason.strip()) == (
            401, "token algorithm 'HS256' is not allowed for this tenant")


async def test_api_keys_open_sockets_rotate_and_are_revoked(
        gateway: Gateway, redis_cluster: RedisCluster) -> None:
    store = TenantStore(gateway.redis)
    first = await store.create_api_key("t")
    assert first.key.startswith("prly_") and len(first.key) >= 5 + 43
    # Only the hash is stored: the key itself is nowhere in Redis.
    stored = [await redis_cluster.get(k) async for k in redis_cluster.scan_iter("parley:*")
              if await redis_cluster.type(k) == "string"]
    assert not any(first.key in (v or "") for v in stored)
    assert await redis_cluster.exists(f"parley:{{apikey:{hash_api_key(first.key)}}}")

    async def as_backend(key: str, user: str) -> dict[str, Any]:
        async with websockets.connect(url(gateway, f"c-{user}", user=user),
                                      additional_headers={"X-Parley-Key": key}) as ws:
            return await welcome(ws)

    assert (await as_backend(first.key, "carol"))["user_id"] == "carol"
    second = await store.create_api_key("t")  # rotation: both work until one is revoked
    assert (await as_backend(second.key, "dave"))["user_id"] == "dave"
    assert (await as_backend(first.key, "carol"))["user_id"] == "carol"
    revoked = await store.revoke_api_key("t", first.key_id)
    assert revoked.revoked_at is not None
    await asyncio.sleep(CACHE_TTL_S)  # every gateway refuses it within the cache's TTL
    status, reason = await refusal(url(gateway, "c-carol", user="carol"),
                                   {"X-Parley-Key": first.key})
    assert (status, reason.strip()) == (401, "API key revoked")
    assert (await as_backend(second.key, "dave"))["user_id"] == "dave"
    status, reason = await refusal(url(gateway, "c-eve", user="eve"),
                                   {"X-Parley-Key": "prly_" + "A" * 43})
    assert (status, reason.strip()) == (401, "unknown API key")
    assert [k.key_id for k in await store.api_keys("t")] == [first.key_id, second.key_id]


async def test_a_burst_of_lookups_after_the_cache_expires_reads_each_tenant_and_key_once(
        gateway: Gateway, settings: Settings) -> None:
    # A busy gateway lets the messages it held on in one loop turn, and each asks for its
    # tenant's configuration. With the cache expired, one read each took every one of
    # the cluster client's connections to the tenant's primary (MaxConnectionsError),
    # and messages numbered in the same turn were refused as "unavailable".
    key = await TenantStore(gateway.redis).create_api_key("t")
    redis = connect_cluster(settings.redis_startup_nodes, max_connections=4, fail_fast=True)
    try:
        store = TenantStore(redis, cache_ttl_s=0.2)
        for _ in range(2):  # the first lookups, then again once the entries expired
            configs = await asyncio.gather(*(store.get("t") for _ in range(200)))
            records = await asyncio.gather(*(store.find_api_key(key.key) for _ in range(200)))
            assert {c.tenant_id for c in configs if c} == {"t"} and None not in configs
            assert {r.key_id for r in records if r} == {key.key_id} and None not in records
            await asyncio.sleep(0.3)
    finally:
        await redis.aclose()


async def test_an_origin_the_tenant_did_not_allow_is_refused(gateway: Gateway) -> None:
    token = token_for("shop", "ann")
    async with websockets.connect(url(gateway, "c-o", token),
                                  origin="https://shop.example") as ws:  # type: ignore[arg-type]
        await welcome(ws)
    status, reason = await refusal(url(gateway, "c-o", token),
                                   {"Origin": "https://evil.example"})
    assert status == 403 and "origin" in reason


async def test_bad_connection_parameters_are_a_400(gateway: Gateway) -> None:
    status, reason = await refusal(url(gateway, "a%20b", token_for("t")))
    assert status == 400 and "conversation id" in reason


async def test_dev_tokens_are_not_served_outside_development_mode(gateway: Gateway) -> None:
    status, _ = await refusal(f"{base(gateway)}/dev/token")
    assert status == 404


async def test_dev_mode_serves_tokens_for_new_users_of_the_demo_tenant(
        settings: Settings, tenant: AuthTenant) -> None:
    await put_tenants(settings.redis_nodes, [test_tenant_config("demo")])
    server = Gateway(settings.replace(gateway_port=0, dev_mode=True))
    await server.start()
    try:
        loop = asyncio.get_running_loop()

        def get(path: str) -> dict[str, Any]:
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as r:
                assert r.headers["Cache-Control"] == "no-store"
                body: dict[str, Any] = json.loads(r.read())
                return body

        one, two = await loop.run_in_executor(None, get, "/dev/token"), \
            await loop.run_in_executor(None, get, "/dev/token")
        assert one["tenant"] == "demo" and one["user"] != two["user"]
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?token={one['token']}"
                                      "&conversation=c-dev") as ws:
            assert (await welcome(ws))["user_id"] == one["user"]
    finally:
        await server.close()


# -- ownership ---------------------------------------------------------------------------


async def test_a_conversation_belongs_to_its_first_user(
        gateway: Gateway, settings: Settings, redis_cluster: RedisCluster) -> None:
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    ann, bob = token_for("t", "ann"), token_for("t", "bob")
    async with websockets.connect(url(gateway, conversation, ann)) as ws:
        await welcome(ws)
        ack = await send(ws, "hello", "m1")
        assert ack["type"] == "ack"
    # A reply in the outbox, as the worker leaves it for clients that resume.
    keys = ConversationKeys("t", conversation)
    await redis_cluster.zadd(keys.outbox, {bot_reply("t", conversation, 1, "secret"): 1})

    # Bob cannot connect: not fresh, not with last_seq (replay), not to resume later.
    for params in ({}, {"last_seq": 0}):
        status, reason = await refusal(url(gateway, conversation, bob, **params))
        assert (status, reason.strip()) == (403, "conversation belongs to another user")
    # An API key of the same tenant speaking for bob is refused too.
    key = await TenantStore(gateway.redis).create_api_key("t")
    status, _ = await refusal(url(gateway, conversation, user="bob", last_seq=0),
                              {"X-Parley-Key": key.key})
    assert status == 403
    # Ann still can, and gets what she missed.
    async with websockets.connect(url(gateway, conversation, ann, last_seq=0)) as ws:
        await welcome(ws)
        replayed = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert (replayed["type"], replayed["text"]) == ("reply", "secret")
    assert await redis_cluster.get(keys.owner) == "ann"


async def test_state_nobody_owns_is_nobodys_to_take(
        gateway: Gateway, redis_cluster: RedisCluster) -> None:
    """A conversation with replies but no owner record (a Slack channel's conversation,
    which nobody opens over /ws; or one whose owner record ran out first) is refused to
    every user: taking it would hand them its replies."""
    slack = ConversationKeys("t", f"slack-T0{uuid.uuid4().hex[:6].upper()}-C0001")
    await redis_cluster.zadd(slack.outbox, {bot_reply("t", slack.conversation_id, 1,
                                                      "for the channel"): 1})
    await redis_cluster.set(slack.inbound_seq, 1)
    for params in ({}, {"last_seq": 0}):
        status, reason = await refusal(url(gateway, slack.conversation_id,
                                           token_for("t", "mallory"), **params))
        assert (status, reason.strip()) == (403, "conversation belongs to another user")
    assert await redis_cluster.get(slack.owner) is None


async def test_a_tenants_retention_is_the_ttl_of_every_key_of_its_conversations(
        gateway: Gateway, settings: Settings, redis_cluster: RedisCluster) -> None:
    """The owner's connect records the tenant's retention next to the conversation; the
    messages keep the conversation's keys at that TTL (and the dialogue step's writes do
    the same: test_conversation_store), so they expire together, the owner too."""
    brief, usual = (ConversationKeys(t, f"c-{uuid.uuid4().hex[:8]}") for t in ("brief", "t"))
    for keys in (brief, usual):
        token = token_for(keys.tenant_id, "ann")
        async with websockets.connect(url(gateway, keys.conversation_id, token)) as ws:
            await welcome(ws)
            assert (await send(ws, "hello", "m1"))["type"] == "ack"
    for name in (brief.owner, brief.retention, brief.inbound_seq, brief.message_ids):
        assert 0 < await redis_cluster.ttl(name) <= RETENTION_S, name
    assert await redis_cluster.get(brief.retention) == str(RETENTION_S)
    for name in (usual.owner, usual.retention, usual.inbound_seq, usual.message_ids):
        assert RETENTION_S < await redis_cluster.ttl(name) <= settings.session_ttl_s, name
    # A message renews the owner's record with the rest once their TTLs have run down:
    # an owner who keeps one socket open longer than the retention keeps their
    # conversation. (Time passing is played by shortening every key's TTL.)
    kept = (brief.owner, brief.retention, brief.inbound_seq, brief.message_ids)
    token = token_for("brief", "ann")
    async with websockets.connect(url(gateway, brief.conversation_id, token)) as ws:
        await welcome(ws)
        for name in kept:
            await redis_cluster.expire(name, 5)
        assert (await send(ws, "still here", "m2"))["type"] == "ack"
    for name in kept:
        assert RETENTION_S - 1 <= await redis_cluster.ttl(name) <= RETENTION_S, name


async def test_another_tenant_with_the_same_conversation_id_sees_nothing(
        gateway: Gateway, settings: Settings, redis_cluster: RedisCluster) -> None:
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    keys = ConversationKeys("t", conversation)
    async with websockets.connect(url(gateway, conversation, token_for("t", "ann"))) as ann:
        await welcome(ann)
        assert (await send(ann, "mine", "m1"))["type"] == "ack"
        await redis_cluster.zadd(keys.outbox, {bot_reply("t", conversation, 1, "for ann"): 1})
        # The same user name and conversation id in another tenant: a different conversation.
        async with websockets.connect(url(gateway, conversation, token_for("t2", "ann"),
                                          last_seq=0)) as other:
            assert (await welcome(other))["tenant_id"] == "t2"
            await nothing_within(other, 1.0)  # no replay of t's outbox
            ack = await send(other, "theirs", "m1")
            assert (ack["type"], ack["seq"]) == ("ack", 1)  # its own numbering

            # Live fan-out: t's reply reaches ann only; t2's reaches the other only.
            publish_reply(settings, bot_reply("t", conversation, 2, "live for ann"),
                          conversation)
            got = json.loads(await asyncio.wait_for(ann.recv(), 30))
            assert got["text"] == "live for ann"
            publish_reply(settings, bot_reply("t2", conversation, 1, "live for t2"),
                          conversation)
            got = json.loads(await asyncio.wait_for(other.recv(), 30))
            assert got["text"] == "live for t2"
            await nothing_within(ann, 1.0)
            await nothing_within(other, 0.5)

    events = {e["payload"]["text"]: e for e in inbound_events(settings)
              if e["conversation_id"] == conversation}
    assert (events["mine"]["tenant_id"], events["theirs"]["tenant_id"]) == ("t", "t2")


async def test_no_foreign_socket_gets_a_live_reply(gateway: Gateway, settings: Settings) -> None:
    """Sessions are keyed by tenant and conversation and connects are checked, so the
    only sockets a reply can reach are its owner's (here, two of ann's)."""
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    ann = token_for("t", "ann")
    async with websockets.connect(url(gateway, conversation, ann)) as one, \
            websockets.connect(url(gateway, conversation, ann)) as two:
        await welcome(one)
        await welcome(two)
        status, _ = await refusal(url(gateway, conversation, token_for("t", "bob")))
        assert status == 403
        sockets = [c.user_id for c in gateway.sessions[ConversationKeys("t", conversation)]]
        assert sockets == ["ann", "ann"]
        publish_reply(settings, bot_reply("t", conversation, 1, "both"), conversation)
        for ws in (one, two):
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["text"] == "both"


async def test_events_carry_who_sent_them_and_usage_is_counted(
        gateway: Gateway, settings: Settings) -> None:
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    token = token_for("t", "ann", tier="premium", roles=["agent", "vip"])
    async with websockets.connect(url(gateway, conversation, token)) as ws:
        await welcome(ws)
        for i in range(3):
            assert (await send(ws, f"m{i}", f"m{i}"))["type"] == "ack"
    event = next(e for e in inbound_events(settings) if e["conversation_id"] == conversation)
    assert (event["tenant_id"], event["user_id"]) == ("t", "ann")
    assert (event["payload"]["tier"], event["payload"]["roles"]) == ("premium", ["agent", "vip"])
    await gateway.usage.flush()
    assert (await TenantStore(gateway.redis).usage("t"))["messages"] >= 3
