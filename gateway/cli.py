"""``parley gateway``: run one gateway process; ``parley tenant`` and ``parley token``:
manage tenants and mint development tokens (gateway/tenants.py, gateway/auth.py).

Tenant commands talk to the Redis Cluster of PARLEY_REDIS_NODES, which every gateway
reads: what they change takes effect on every gateway within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from redis.asyncio.cluster import RedisCluster

from gateway.auth import mint_token
from gateway.server import Gateway
from gateway.tenants import TIERS, Branding, TenantStore, tenant_config
from kernel.logs import configure_logging
from kernel.runtime import collect_young_less_often, observe_gc_pauses, run_until_signalled
from kernel.settings import Settings
from streams.state import REDIS_UNAVAILABLE, connect_cluster
from streams.usage import COUNTERS

__all__ = ["gateway", "tenant", "token"]

T = TypeVar("T")


@click.command()
@click.option("--host", help="Listen address (default: PARLEY_GATEWAY_HOST).")
@click.option("--port", type=int, help="Listen port (default: PARLEY_GATEWAY_PORT; 0: any).")
@click.option("--api-port", type=int,
              help="HTTP API port for webhooks (default: PARLEY_GATEWAY_API_PORT; 0: any).")
@click.option("--id", "gateway_id", help="Instance name (default: host name + pid).")
def gateway(host: str | None, port: int | None, api_port: int | None,
            gateway_id: str | None) -> None:
    """Run a WebSocket gateway: /ws, /healthz, /readyz, /metrics and the chat page at /;
    Slack and SMS webhooks on its API port (docs/channels.md)."""
    overrides: dict[str, object] = {
        "gateway_host": host, "gateway_port": port, "gateway_api_port": api_port,
        "gateway_id": gateway_id}
    settings = Settings.from_env(None, **{k: v for k, v in overrides.items() if v is not None})
    configure_logging("gateway", settings.log_level, settings.log_json)
    server = Gateway(settings)

    async def start() -> None:
        collect_young_less_often()
        observe_gc_pauses()
        await server.start()
        click.echo(f"gateway listening on {server.url} (ws: {server.url}ws, "
                   f"api: {server.api.url})", err=True)

    run_until_signalled(start, server.close)


def with_cluster(work: Callable[[RedisCluster], Awaitable[T]]) -> T:
    """Run ``work`` on a client of PARLEY_REDIS_NODES' cluster (as this process's Redis
    user), for a command line: an unreachable cluster is one line naming the setting."""
    settings = Settings.from_env()

    async def run() -> T:
        redis = connect_cluster(settings.redis_startup_nodes)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except REDIS_UNAVAILABLE as exc:
        raise click.ClickException(
            f"cannot reach the Redis Cluster at {settings.redis_nodes} (PARLEY_REDIS_NODES): "
            f"{exc}") from exc


def with_store(work: Callable[[TenantStore], Awaitable[T]]) -> T:
    """Run ``work`` against the tenants in PARLEY_REDIS_NODES' cluster."""
    return with_cluster(lambda redis: work(TenantStore(redis)))


def _flags(values: tuple[str, ...]) -> dict[str, int]:
    flags = {}
    for value in values:
        name, _, percent = value.partition("=")
        if not name or not percent.isdigit():
            raise click.BadParameter(f"{value!r}: expected NAME=PERCENT", param_hint="--flag")
        flags[name] = int(percent)
    return flags


def _rates(values: tuple[str, ...]) -> dict[str, str]:
    rates = {}
    for value in values:
        name, _, rate = value.partition("=")
        if not name or not rate:
            raise click.BadParameter(f"{value!r}: expected TIER=RATE:BURST or tenant=RATE:BURST",
                                     param_hint="--rate")
        rates[name] = rate
    return rates


@click.group()
def tenant() -> None:
    """Create tenants, manage their API keys, read their usage."""


@tenant.command("create")
@click.argument("tenant_id")
@click.option("--tier", "tiers", multiple=True, type=click.Choice(TIERS),
              help="A tier the tenant's users may have (repeat); the first is the default. "
                   "Default: default.")
@click.option("--origin", "origins", multiple=True,
              help="A browser origin allowed to open /ws, e.g. https://shop.example (repeat; "
                   "'*' allows any).")
@click.option("--issuer", default="parley", show_default=True, help="Tokens' iss.")
@click.option("--audience", help="Tokens' aud (default: parley:<tenant>).")
@click.option("--jwks-url", default="", help="Verify RS256 tokens with the keys at this URL.")
@click.option("--bot", default="", help="A label for operators (the bot served is the one "
                                        "`parley bot publish --tenant` published).")
@click.option("--retention-s", type=int, default=0,
              help="Seconds a conversation's state is kept after its last message "
                   "(0: PARLEY_SESSION_TTL_S).")
@click.option("--name", "brand_name", default="", help="Branding: the name the chat page shows.")
@click.option("--color", default="", help="Branding: the chat page's accent color.")
@click.option("--greeting", default="", help="Branding: the chat page's welcome text.")
@click.option("--suggestion", "suggestions", multiple=True, help="Branding: a suggested "
              "first message (repeat).")
@click.option("--flag", "flags", multiple=True, help="A feature flag and the percentage of "
              "users it is on for, NAME=PERCENT (repeat).")
@click.option("--rate", "rates", multiple=True, help="The tenant's own rate limit of a tier's "
              "users, TIER=PER_MINUTE:BURST, or of all its users together, tenant=PER_MINUTE:"
              "BURST or tenant=off (repeat; default: the gateway's PARLEY_RATE_*).")
def create_tenant(tenant_id: str, tiers: tuple[str, ...], origins: tuple[str, ...],
                  issuer: str, audience: str | None, jwks_url: str, bot: str, retention_s: int,
                  brand_name: str, color: str, greeting: str, suggestions: tuple[str, ...],
                  flags: tuple[str, ...], rates: tuple[str, ...]) -> None:
    """Create tenant TENANT_ID; prints its HS256 secret once (for its token issuer)."""
    config = tenant_config(
        tenant_id, tiers=tiers or ("default",), origins=origins, issuer=issuer,
        audience=audience, jwks_url=jwks_url, bot=bot, retention_s=retention_s,
        branding=Branding(brand_name, color, greeting, suggestions), flags=_flags(flags),
        rates=_rates(rates),
    )  # fmt: skip

    async def work(store: TenantStore) -> None:
        await store.create(config)

    with_store(work)
    click.echo(f"created tenant {tenant_id}: tiers {', '.join(config.allowed_tiers)} "
               f"(default {config.default_tier}), issuer {config.jwt.issuer!r}, audience "
               f"{config.jwt.audience!r}, algorithms {', '.join(config.jwt.algorithms)}")
    if config.jwt.hs256_secret:
        click.echo(f"HS256 secret (shown once; give it to the tenant's token issuer):\n"
                   f"{config.jwt.hs256_secret}")


@tenant.group("key")
def key() -> None:
    """API keys for a tenant's backends (X-Parley-Key)."""


@key.command("create")
@click.argument("tenant_id")
def create_key(tenant_id: str) -> None:
    """A new API key for TENANT_ID, printed once (only its SHA-256 is stored)."""
    new = with_store(lambda store: store.create_api_key(tenant_id))
    click.echo(f"key id {new.key_id} (revoke with `parley tenant key revoke {tenant_id} "
               f"{new.key_id}`); the key, shown once:", err=True)
    click.echo(new.key)


@key.command("revoke")
@click.argument("tenant_id")
@click.argument("key_id")
def revoke_key(tenant_id: str, key_id: str) -> None:
    """Revoke API key KEY_ID of TENANT_ID (refused by every gateway within seconds)."""
    record = with_store(lambda store: store.revoke_api_key(tenant_id, key_id))
    click.echo(f"revoked {record.key_id} of {record.tenant_id}")


@key.command("list")
@click.argument("tenant_id")
def list_keys(tenant_id: str) -> None:
    """TENANT_ID's API keys: id, created, revoked."""
    for record in with_store(lambda store: store.api_keys(tenant_id)):
        click.echo(json.dumps({"key_id": record.key_id, "created_at": record.created_at,
                               "revoked_at": record.revoked_at}))


@tenant.command("usage")
@click.argument("tenant_id")
def usage(tenant_id: str) -> None:
    """TENANT_ID's usage counters as JSON: messages accepted, knowledge requests answered,
    LLM calls and prompt/completion tokens (also per model, ``llm_prompt_tokens:<model>``);
    a counter nothing counted yet shows 0."""

    async def work(store: TenantStore) -> dict[str, int]:
        await store.require(tenant_id)
        return await store.usage(tenant_id)

    counts = with_store(work)
    click.echo(json.dumps({"tenant": tenant_id, **dict.fromkeys(COUNTERS, 0), **counts},
                          sort_keys=True))


@click.command()
@click.option("--tenant", "tenant_id", required=True, help="The user's tenant.")
@click.option("--user", "user_id", required=True, help="The user (the token's sub).")
@click.option("--tier", type=click.Choice(TIERS), help="Claimed tier (the tenant must allow "
              "it, else its default tier applies).")
@click.option("--roles", default="", help="Comma-separated roles.")
@click.option("--role", "role", multiple=True,
              help="A role (repeatable), e.g. bot_tester: sees each turn's dialogue state "
                   "(`parley test --url`), or agent: the handoff console.")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 30 * 24 * 3600), default=3600,
              show_default=True, help="Seconds the token is valid.")
def token(tenant_id: str, user_id: str, tier: str | None, roles: str, role: tuple[str, ...],
          ttl_s: int) -> None:
    """Mint a token for a user with the tenant's HS256 secret (development, tests)."""
    config = with_store(lambda store: store.require(tenant_id))
    named = {r.strip() for r in (*roles.split(","), *role) if r.strip()}
    click.echo(mint_token(config, user_id, tier=tier, ttl_s=ttl_s, roles=sorted(named)))
