"""``parley tenant`` and ``parley token`` against a real Redis Cluster: what they print
works on a real gateway's store, and bad input gets a one-line error."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest
from click.testing import CliRunner
from redis.asyncio.cluster import RedisCluster

from gateway.auth import Authenticator
from gateway.tenants import TenantStore
from kernel.settings import Settings
from parley.cli import main
from streams.state import connect_cluster
from streams.usage import add_usage

pytestmark = pytest.mark.timeout(120)


def parley(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args),
                                env={"PARLEY_REDIS_NODES": settings.redis_nodes})
    return result.exit_code, result.output


async def run(settings: Settings, *args: str) -> tuple[int, str]:
    """The command runs its own event loop: on a thread of its own."""
    return await asyncio.to_thread(parley, settings, *args)


@pytest.mark.asyncio
async def test_a_tenant_created_on_the_command_line_verifies_its_tokens_and_keys(
        settings: Settings, redis_cluster: RedisCluster) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    code, out = await run(settings, "tenant", "create", tenant, "--tier", "authenticated",
                       "--tier", "premium", "--origin", "https://shop.example",
                       "--name", "Acme", "--greeting", "Hello!", "--flag", "canary=10")
    assert code == 0, out
    assert "HS256 secret" in out
    code, out = await run(settings, "tenant", "create", tenant)
    assert code == 1 and "exists already" in out

    code, token = await run(settings, "token", "--tenant", tenant, "--user", "ann",
                         "--tier", "premium", "--roles", "agent,vip", "--ttl", "60")
    assert code == 0, token
    code, out = await run(settings, "tenant", "key", "create", tenant)
    assert code == 0, out
    key = out.strip().splitlines()[-1]
    key_id = out.split("key id ")[1].split()[0]

    redis = connect_cluster(settings.redis_startup_nodes)
    try:
        store = TenantStore(redis, cache_ttl_s=0)
        config = await store.require(tenant)
        assert config.allowed_origins == ("https://shop.example",)
        assert config.branding.greeting == "Hello!" and config.flags == {"canary": 10}
        auth = Authenticator(store)
        principal, _ = await auth.verify_token(token.strip())
        assert (principal.tenant_id, principal.user_id, principal.tier, principal.roles) == \
            (tenant, "ann", "premium", frozenset({"agent", "vip"}))
        assert (await store.find_api_key(key)) is not None

        code, out = await run(settings, "tenant", "key", "revoke", tenant, key_id)
        assert code == 0, out
        record = await store.find_api_key(key)
        assert record is not None and record.revoked_at is not None
        code, out = await run(settings, "tenant", "key", "list", tenant)
        assert json.loads(out)["revoked_at"] == record.revoked_at

        await add_usage(redis, {tenant: Counter(messages=4, llm_prompt_tokens=90)})
        code, out = await run(settings, "tenant", "usage", tenant)
        assert code == 0 and json.loads(out) == {  # every counter, 0 when none was counted
            "tenant": tenant, "messages": 4, "knowledge_requests": 0, "llm_calls": 0,
            "llm_prompt_tokens": 90, "llm_completion_tokens": 0}
    finally:
        await redis.aclose()


@pytest.mark.parametrize("args", [
    ("tenant", "usage", "nobody-here"),
    ("tenant", "key", "create", "nobody-here"),
    ("tenant", "key", "revoke", "nobody-here", "k-1"),
    ("token", "--tenant", "nobody-here", "--user", "ann"),
    ("tenant", "create", "bad tenant"),
    ("tenant", "create", "t-x", "--flag", "canary"),
])  # fmt: skip
def test_mistakes_get_a_one_line_error(settings: Settings, args: tuple[str, ...]) -> None:
    code, out = parley(settings, *args)
    assert code in (1, 2), out
    assert "Traceback" not in out and out.strip()


def test_an_unreachable_cluster_is_named() -> None:
    result = CliRunner().invoke(main, ["tenant", "usage", "acme"],
                                env={"PARLEY_REDIS_NODES": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert "cannot reach the Redis Cluster at 127.0.0.1:1" in result.output
