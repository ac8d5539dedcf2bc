"""Credentials in, a Principal or a refusal with a reason out (gateway/auth.py).

Tokens are real JWTs signed with real keys; the JWKS is served over HTTP by a local
server, so key lookup by ``kid`` and rotation go through PyJWKClient as in production.
API keys and tenants come from an in-memory stand-in for the Redis store (the store
itself is tested against Redis Cluster in tests/integration/test_gateway_auth.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth import (
    MAX_LEEWAY_S,
    Authenticator,
    AuthError,
    Credentials,
    Principal,
    check_origin,
    credentials_from,
    mint_token,
)
from gateway.tenants import ApiKeyRecord, TenantConfig, TenantError, TenantStore, tenant_config
from kernel.errors import ConfigError
from kernel.settings import Settings
from tests.tenants import Jwks

SECRET = "s" * 48


class MemoryTenants:
    """The two reads the authenticator makes of a TenantStore."""

    def __init__(self, *configs: TenantConfig) -> None:
        self.configs = {c.tenant_id: c for c in configs}
        self.keys: dict[str, ApiKeyRecord] = {}

    async def get(self, tenant_id: str) -> TenantConfig | None:
        return self.configs.get(tenant_id)

    async def find_api_key(self, key: str) -> ApiKeyRecord | None:
        return self.keys.get(key)


def authenticator(*configs: TenantConfig, **kwargs: Any) -> tuple[Authenticator, MemoryTenants]:
    tenants = MemoryTenants(*configs)
    return Authenticator(cast(TenantStore, tenants), **kwargs), tenants


def hs_tenant(tenant_id: str = "acme", **kwargs: Any) -> TenantConfig:
    kwargs.setdefault("tiers", ("default", "premium"))
    return tenant_config(tenant_id, secret=SECRET + tenant_id, **kwargs)


def claims(config: TenantConfig, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": config.jwt.issuer, "aud": config.jwt.audience, "sub": "ann",
            "tenant": config.tenant_id, "iat": now, "nbf": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(config: TenantConfig, **overrides: Any) -> str:
    return jwt.encode(claims(config, **overrides), config.jwt.hs256_secret, algorithm="HS256")


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def refused(auth: Authenticator, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await auth.verify_token(token)
    return caught.value


# -- HS256 ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_valid_token_gives_its_tenant_user_tier_and_roles() -> None:
    config = hs_tenant()
    auth, _ = authenticator(config)
    token = hs_token(config, tier="premium", roles=["agent"])
    principal, got = await auth.verify_token(token)
    assert principal == Principal("acme", "ann", "premium", frozenset({"agent"}))
    assert got is config


@pytest.mark.asyncio
async def test_a_tier_the_tenant_does_not_allow_becomes_its_default() -> None:
    config = hs_tenant(tiers=("authenticated", "premium"), default_tier="authenticated")
    auth, _ = authenticator(config)
    token = jwt.encode(claims(config, tier="premium"), config.jwt.hs256_secret)
    assert (await auth.verify_token(token))[0].tier == "premium"
    for tier in ("default", "gold", 7):
        token = hs_token(config, tier=tier)
        assert (await auth.verify_token(token))[0].tier == "authenticated"


@pytest.mark.asyncio
async def test_minted_tokens_verify() -> None:
    config = hs_tenant()
    auth, _ = authenticator(config)
    principal, _ = await auth.verify_token(
        mint_token(config, "bob", tier="premium", roles=["a", "b"], ttl_s=60))
    assert principal == Principal("acme", "bob", "premium", frozenset({"a", "b"}))


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"exp": -120}, "token expired"),  # exp and nbf: seconds from now, taken in the test
    ({"nbf": +120}, "token not yet valid"),
    ({"aud": "parley:other"}, "audience"),
    ({"iss": "someone-else"}, "issuer"),
    ({"exp": None}, "'exp' claim"),
    ({"nbf": None}, "'nbf' claim"),
    ({"aud": None}, "'aud' claim"),
    ({"iss": None}, "'iss' claim"),
    ({"sub": None}, "'sub' claim"),
    ({"sub": "a b"}, "subject"),
    ({"roles": "admin"}, "roles"),
    ({"tenant": None}, "no tenant claim"),
    ({"tenant": "nobody"}, "unknown tenant"),
    ({"tenant": "bad/tenant"}, "invalid tenant"),
])  # fmt: skip
@pytest.mark.asyncio
async def test_bad_claims_are_refused_with_their_reason(overrides: dict[str, Any],
                                                        reason: str) -> None:
    config = hs_tenant()
    auth, _ = authenticator(config)
    now = int(time.time())  # not at collection: the suite may run minutes after it
    overrides = {k: now + v if k in ("exp", "nbf") and isinstance(v, int) else v
                 for k, v in overrides.items()}
    error = await refused(auth, hs_token(config, **overrides))
    assert error.status == 401
    assert reason in error.reason


@pytest.mark.asyncio
async def test_clock_skew_within_the_leeway_is_forgiven_and_beyond_it_is_not() -> None:
    config = hs_tenant()
    auth, _ = authenticator(config, leeway_s=30)
    now = int(time.time())
    await auth.verify_token(hs_token(config, exp=now - 20, nbf=now + 20))
    assert "expired" in (await refused(auth, hs_token(config, exp=now - 40))).reason
    assert "not yet valid" in (await refused(auth, hs_token(config, nbf=now + 40))).reason


def test_the_leeway_is_capped() -> None:
    with pytest.raises(ValueError, match="leeway"):
        Authenticator(cast(TenantStore, MemoryTenants()), leeway_s=MAX_LEEWAY_S + 1)


@pytest.mark.asyncio
async def test_a_token_signed_with_another_secret_is_refused() -> None:
    config = hs_tenant()
    auth, _ = authenticator(config)
    forged = jwt.encode(claims(config), "x" * 48, algorithm="HS256")
    assert "signature" in (await refused(auth, forged)).reason


@pytest.mark.asyncio
async def test_a_token_of_one_tenant_cannot_claim_another() -> None:
    acme, globex = hs_tenant("acme"), hs_tenant("globex")
    auth, _ = authenticator(acme, globex)
    # Signed with acme's secret, naming globex (and globex's audience and issuer).
    forged = jwt.encode(claims(globex), acme.jwt.hs256_secret, algorithm="HS256")
    assert "signature" in (await refused(auth, forged)).reason


@pytest.mark.asyncio
async def test_alg_none_is_refused() -> None:
    config = hs_tenant()
    auth, _ = authenticator(config)
    unsigned = jwt.encode(claims(config), "", algorithm="none")
    assert "'none' is not allowed" in (await refused(auth, unsigned)).reason
    # Hand-made too: header {"alg": "none"} and an empty signature.
    crafted = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(config))}."
    assert (await refused(auth, crafted)).status == 401


@pytest.mark.asyncio
async def test_an_algorithm_off_the_allow_list_is_refused() -> None:
    config = hs_tenant()
    auth, _ = authenticator(config)
    token = jwt.encode(claims(config), config.jwt.hs256_secret, algorithm="HS384")
    assert "'HS384' is not allowed" in (await refused(auth, token)).reason


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "e30.e30.", "x" * 5000])
@pytest.mark.asyncio
async def test_garbage_is_a_malformed_token(token: str) -> None:
    auth, _ = authenticator(hs_tenant())
    error = await refused(auth, token)
    assert error.status == 401


@pytest.mark.asyncio
async def test_missing_credentials_are_refused_with_a_reason() -> None:
    auth, _ = authenticator(hs_tenant())
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(Credentials())
    assert caught.value.status == 401
    assert "missing credentials" in caught.value.reason


# -- RS256 with a JWKS URL -------------------------------------------------------


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    with Jwks() as server:
        yield server


def rs_tenant(url: str) -> TenantConfig:
    return tenant_config("rsco", jwks_url=url, algorithms=("RS256",))


def rs_token(config: TenantConfig, key: rsa.RSAPrivateKey, kid: str, **overrides: Any) -> str:
    return jwt.encode(claims(config, **overrides), key, algorithm="RS256",
                      headers={"kid": kid})


@pytest.mark.asyncio
async def test_rs256_tokens_verify_with_the_key_their_kid_names(jwks: Jwks) -> None:
    config = rs_tenant(jwks.url)
    auth, _ = authenticator(config, jwks_cooldown_s=0)
    one, two = jwks.add("one"), jwks.add("two")
    assert (await auth.verify_token(rs_token(config, one, "one")))[0].user_id == "ann"
    assert (await auth.verify_token(rs_token(config, two, "two", sub="bob")))[0].user_id == "bob"
    assert "signature" in (await refused(auth, rs_token(config, one, "two"))).reason


@pytest.mark.asyncio
async def test_unknown_kid_is_refused(jwks: Jwks) -> None:
    config = rs_tenant(jwks.url)
    auth, _ = authenticator(config, jwks_cooldown_s=0)
    key = jwks.add("one")
    assert "kid" in (await refused(auth, rs_token(config, key, "nope"))).reason
    no_kid = jwt.encode(claims(config), key, algorithm="RS256")
    assert (await refused(auth, no_kid)).status == 401


@pytest.mark.asyncio
async def test_a_rotated_in_key_is_fetched_and_a_rotated_out_one_stops_working(
        jwks: Jwks) -> None:
    config = rs_tenant(jwks.url)
    # The key set is cached: a key removed from it stops working once the cache expires.
    auth, _ = authenticator(config, jwks_cooldown_s=0)
    old = jwks.add("2026-01")
    await auth.verify_token(rs_token(config, old, "2026-01"))
    fetched = jwks.fetches
    await auth.verify_token(rs_token(config, old, "2026-01"))
    assert jwks.fetches == fetched, "the key set is cached between tokens"
    new = jwks.add("2026-02")  # rotation: the identity provider publishes a new key
    del jwks.keys["2026-01"]
    await auth.verify_token(rs_token(config, new, "2026-02"))
    assert jwks.fetches == fetched + 1, "an unknown kid fetched the key set again"
    assert "kid" in (await refused(auth, rs_token(config, old, "2026-01"))).reason


@pytest.mark.asyncio
async def test_the_jwks_refetch_after_an_unknown_kid_is_rate_limited(jwks: Jwks) -> None:
    config = rs_tenant(jwks.url)
    auth, _ = authenticator(config, jwks_cooldown_s=60)
    key = jwks.add("one")
    await auth.verify_token(rs_token(config, key, "one"))
    fetched = jwks.fetches
    for i in range(5):
        await refused(auth, rs_token(config, key, f"made-up-{i}"))
    assert jwks.fetches == fetched


@pytest.mark.asyncio
async def test_an_hs256_token_against_an_rs256_tenant_is_refused(jwks: Jwks) -> None:
    config = rs_tenant(jwks.url)
    auth, _ = authenticator(config, jwks_cooldown_s=0)
    key = jwks.add("one")
    # The classic confusion: the tenant's *public* key used as an HMAC secret.
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'one'})}.{b64(claims(config))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert "'HS256' is not allowed" in (await refused(auth, forged)).reason


@pytest.mark.asyncio
async def test_an_unreachable_jwks_is_503_not_401() -> None:
    config = rs_tenant("http://127.0.0.1:9/jwks.json")
    auth, _ = authenticator(config, jwks_timeout_s=1)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (await refused(auth, rs_token(config, key, "one"))).status == 503


# -- API keys ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_api_key_speaks_for_the_user_it_names() -> None:
    config = hs_tenant(default_tier="premium")
    auth, tenants = authenticator(config)
    tenants.keys["prly_good"] = ApiKeyRecord("acme", "k-1", time.time())
    principal, _ = await auth.authenticate(Credentials(api_key="prly_good", user="carol"))
    assert principal == Principal("acme", "carol", "premium", frozenset())


@pytest.mark.parametrize(("key", "user", "reason"), [
    ("prly_unknown", "carol", "unknown API key"),
    ("prly_revoked", "carol", "revoked"),
    ("prly_good", None, "?user="),
    ("prly_good", "a b", "invalid user"),
])  # fmt: skip
@pytest.mark.asyncio
async def test_bad_api_keys_are_refused(key: str, user: str | None, reason: str) -> None:
    auth, tenants = authenticator(hs_tenant())
    tenants.keys["prly_good"] = ApiKeyRecord("acme", "k-1", time.time())
    tenants.keys["prly_revoked"] = ApiKeyRecord("acme", "k-2", time.time(), time.time())
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(Credentials(api_key=key, user=user))
    assert caught.value.status == 401
    assert reason in caught.value.reason


# -- the request's credentials and origin ------------------------------------------------


def test_credentials_come_from_the_query_or_the_headers() -> None:
    assert credentials_from("/ws?token=abc&user=u", {}) == Credentials(token="abc", user="u")
    assert credentials_from("/ws", {"Authorization": "Bearer xyz", "Origin": "https://a.b"}) \
        == Credentials(token="xyz", origin="https://a.b")
    assert credentials_from("/ws?user=u", {"X-Parley-Key": "prly_k"}) \
        == Credentials(api_key="prly_k", user="u")
    with pytest.raises(AuthError, match="Bearer"):
        credentials_from("/ws", {"Authorization": "Basic dXNlcjpwYXNz"})


def test_only_allowed_origins_may_open_a_socket() -> None:
    config = hs_tenant(origins=("https://shop.example/",))
    check_origin(config, "https://shop.example")
    check_origin(config, None)  # not a browser
    with pytest.raises(AuthError) as caught:
        check_origin(config, "https://evil.example")
    assert caught.value.status == 403
    with pytest.raises(AuthError):
        check_origin(hs_tenant(), "https://shop.example")  # no origins listed: none allowed
    check_origin(hs_tenant(origins=("*",)), "https://anywhere.example")


def test_tokens_can_only_be_minted_for_tenants_with_a_shared_secret() -> None:
    with pytest.raises(TenantError, match="JWKS"):
        mint_token(rs_tenant("https://idp.example/jwks"), "ann")


@pytest.mark.parametrize("value", ["301", "-1", "soon"])
def test_the_leeway_setting_refuses_what_cannot_be_meant(value: str) -> None:
    with pytest.raises(ConfigError, match="PARLEY_JWT_LEEWAY_S"):
        Settings.from_env({"PARLEY_JWT_LEEWAY_S": value})
    assert Settings.from_env({"PARLEY_JWT_LEEWAY_S": "300"}).jwt_leeway_s == 300


# -- anything a client may send -----------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
_claim_names = st.sampled_from(["iss", "aud", "sub", "tenant", "exp", "nbf", "iat", "tier",
                                "roles", "jti", "x"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims_in=st.dictionaries(_claim_names, _json, max_size=9),
       header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit"]), _json, max_size=3))
def test_any_signed_claims_give_a_principal_or_a_401(claims_in: dict[str, Any],
                                                      header: dict[str, Any]) -> None:
    """Correctly signed tokens with arbitrary claims and headers: validation never raises
    anything but AuthError (a 401 with a reason)."""
    config = hs_tenant()
    auth, _ = authenticator(config)
    base = claims(config)
    token_claims = {**base, **claims_in}
    signing_input = f"{b64({'typ': 'JWT', **header, 'alg': 'HS256'})}.{b64(token_claims)}"
    mac = hmac.new(config.jwt.hs256_secret.encode(), signing_input.encode(),
                   hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    try:
        principal, _ = asyncio.run(auth.verify_token(token))
    except AuthError as exc:
        assert exc.status == 401 and exc.reason
    else:
        assert principal.tenant_id == "acme" and principal.user_id == token_claims["sub"]


@settings(max_examples=150, deadline=None)
@given(token=st.text(max_size=200) | st.binary(max_size=200).map(
    lambda b: base64.urlsafe_b64encode(b).decode()))
def test_any_string_as_a_token_is_refused_with_a_401(token: str) -> None:
    auth, _ = authenticator(hs_tenant())
    with pytest.raises(AuthError) as caught:
        asyncio.run(auth.verify_token(token))
    assert caught.value.status == 401
