"""Tenants and credentials for tests: one helper instead of a token recipe in every file.

Test tenants share one known HS256 secret, so a test (or the e2e ``ChatClient``) can
mint a token for any test tenant without asking the store; the tenant still has to
exist in the Redis Cluster the gateway reads (:func:`put_tenants`; the e2e pipeline
and the ``tenant`` fixture of tests/conftest.py do it). Test tenants allow every tier
and every Origin: the tests that are about tiers and origins make their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.auth import mint_token
from gateway.tenants import TIERS, TenantConfig, TenantStore, tenant_config
from kernel.settings import Settings
from streams.security import RedisCredentials
from streams.state import connect_cluster

TEST_SECRET = "parley-tests-only-" + "k" * 40


def test_tenant_config(tenant_id: str, **overrides: Any) -> TenantConfig:
    overrides.setdefault("tiers", TIERS)
    overrides.setdefault("origins", ("*",))
    overrides.setdefault("secret", TEST_SECRET)
    return tenant_config(tenant_id, **overrides)


test_tenant_config.__test__ = False  # type: ignore[attr-defined]  # not a test


def token_for(tenant_id: str, user: str = "tester", **kwargs: Any) -> str:
    """A valid token of a test tenant's user (``tier``, ``roles``, ``ttl_s`` as mint_token)."""
    return mint_token(test_tenant_config(tenant_id), user, **kwargs)


@dataclass(frozen=True)
class AuthTenant:
    """A tenant stored in the test's Redis Cluster, and tokens for its users."""

    config: TenantConfig

    @property
    def id(self) -> str:
        return self.config.tenant_id

    def token(self, user: str = "tester", **kwargs: Any) -> str:
        return mint_token(self.config, user, **kwargs)

    def ws_url(self, base: str, conversation: str, *, user: str = "tester",
               last_seq: int | None = None) -> str:
        """``base`` is ``ws://host:port``."""
        query = {"conversation": conversation, "token": self.token(user)}
        if last_seq is not None:
            query["last_seq"] = str(last_seq)
        return f"{base}/ws?{urlencode(query)}"


async def put_tenants(redis_nodes: str, configs: Iterable[TenantConfig],
                      credentials: RedisCredentials | None = None) -> None:
    """Store (or replace) tenants in the cluster at ``redis_nodes`` (as ``credentials``;
    None: this process's)."""
    redis = connect_cluster(Settings.from_env({}, redis_nodes=redis_nodes).redis_startup_nodes,
                            credentials=credentials)
    try:
        store = TenantStore(redis)
        for config in configs:
            await store.put(config)
    finally:
        await redis.aclose()


def put_tenants_sync(redis_nodes: str, configs: Iterable[TenantConfig],
                     credentials: RedisCredentials | None = None) -> None:
    """:func:`put_tenants` from synchronous code (fixtures), on a thread of its own so it
    works whether or not an event loop runs here."""
    configs = list(configs)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, put_tenants(redis_nodes, configs, credentials)).result(
            timeout=30)


class Jwks:
    """A tenant's identity provider: a JWKS endpoint on a free local port (real HTTP,
    as PyJWKClient fetches it); ``add`` a key, delete one from ``keys`` to rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": [
                    {**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid,
                     "alg": "RS256", "use": "sig"} for kid, k in jwks.keys.items()
                ]}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> Jwks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key
