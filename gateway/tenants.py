"""Tenants: who may use a gateway, how their users prove who they are, and what they get.

A tenant's configuration lives in Redis Cluster, so every gateway reads the same one
and ``parley tenant create`` on any machine takes effect everywhere within the cache's
few seconds (:data:`CACHE_TTL_S`). Keys (all hash-tagged by tenant)::

    parley:{tenant:T}:config    string  the tenant's configuration as JSON (TenantConfig)
    parley:{tenant:T}:keys      hash    API key id -> SHA-256 of the key (hex)
    parley:{tenant:T}:usage     hash    counter name -> count (streams/usage.py)
    parley:{apikey:H}           string  JSON {tenant, key_id, created_at, revoked_at}

An API key is looked up by the SHA-256 of what the client sent: the key itself is
shown once, when it is created, and stored nowhere. A key is 32 random bytes (256 bits),
so a fast unsalted hash is enough (a slow password hash protects guessable secrets,
which these are not) and lets a gateway check one per handshake cheaply. Rotation is
creating a second key and revoking the first once the backend uses the new one.

Feature flags roll out by percentage: a user's bucket (:func:`rollout_bucket`, 0-99) is
a stable hash of tenant and user, so a user stays in or out of a rollout as it grows
from 10 % to 50 % and every gateway decides alike. The function is
:func:`kernel.rollout.rollout_bucket`, re-exported here: workers route a tenant's canary
bot version with the same one, so a user is in or out of both alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from async_lru import alru_cache
from redis.asyncio.cluster import RedisCluster

from gateway.limits import Rate
from kernel.errors import ParleyError
from kernel.rollout import in_rollout, rollout_bucket
from streams.keys import validate_id
from streams.usage import read_usage

__all__ = [
    "API_KEY_PREFIX",
    "CACHE_TTL_S",
    "HMAC_ALGORITHMS",
    "PUBLIC_KEY_ALGORITHMS",
    "TIERS",
    "ApiKeyRecord",
    "Branding",
    "JwtConfig",
    "NewApiKey",
    "TenantConfig",
    "TenantError",
    "TenantStore",
    "flag_enabled",
    "hash_api_key",
    "new_hs256_secret",
    "rollout_bucket",
    "tenant_config",
]

logger = logging.getLogger(__name__)

#: Service tiers; the limits lane maps each to its rate limits.
TIERS: tuple[str, ...] = ("default", "authenticated", "premium")
#: Algorithms verified with the tenant's shared secret.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: Algorithms verified with a public key from the tenant's JWKS URL.
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "ES512", "EdDSA"})
#: How long a gateway keeps a tenant's configuration or an API key record before reading
#: it again: a revoked key or a changed configuration takes effect within this.
CACHE_TTL_S = 5.0
#: Tenants and API keys each kept in the cache at most (least recently used go first).
CACHE_SIZE = 10_000
API_KEY_PREFIX = "prly_"
_MIN_SECRET_BYTES = 32


class TenantError(ParleyError):
    """A tenant configuration that cannot work, or a tenant or key that does not exist."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """How a tenant's user tokens are verified.

    ``algorithms`` is the allow-list: a token whose header names another algorithm is
    refused before any key is looked at (never trust the token's own ``alg``, RFC 8725
    §2.1). HMAC algorithms need ``hs256_secret``; public-key ones need ``jwks_url``.
    """

    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("HS256",)
    hs256_secret: str = ""
    jwks_url: str = ""

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise TenantError("a tenant's JWT settings need an issuer and an audience")
        if not self.algorithms:
            raise TenantError("a tenant needs at least one allowed JWT algorithm")
        for alg in self.algorithms:
            if alg not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS:
                raise TenantError(
                    f"JWT algorithm {alg!r} is not allowed; use one of "
                    f"{', '.join(sorted(HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS))}")
            if alg in HMAC_ALGORITHMS and len(self.hs256_secret.encode()) < _MIN_SECRET_BYTES:
                raise TenantError(f"{alg} needs a shared secret of at least "
                                  f"{_MIN_SECRET_BYTES} bytes")
            if alg in PUBLIC_KEY_ALGORITHMS and not self.jwks_url.startswith(
                    ("https://", "http://")):
                raise TenantError(f"{alg} needs a JWKS URL (https://...)")


@dataclass(frozen=True, slots=True)
class Branding:
    """What the chat page shows for the tenant (the welcome frame carries it)."""

    name: str = ""
    color: str = ""
    greeting: str = ""
    suggestions: tuple[str, ...] = ()

    def to_frame(self) -> dict[str, Any]:
        return {"name": self.name, "color": self.color, "greeting": self.greeting,
                "suggestions": list(self.suggestions)}


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One tenant's configuration (JSON in Redis; see the module docstring)."""

    tenant_id: str
    jwt: JwtConfig
    default_tier: str = "default"
    allowed_tiers: tuple[str, ...] = ("default",)
    #: Browser origins allowed to open /ws (``Origin`` header); "*" allows any.
    allowed_origins: tuple[str, ...] = ()
    bot: str = ""
    #: Seconds conversation state is kept (0: the gateway's PARLEY_SESSION_TTL_S).
    retention_s: int = 0
    branding: Branding = field(default_factory=Branding)
    #: Feature flag -> percentage of users (0-100) it is on for.
    flags: Mapping[str, int] = field(default_factory=dict)
    #: Its own rate limits (gateway/limits.py): tier or ``tenant`` -> ``rate:burst``
    #: (``tenant``: ``off`` too); the gateway's settings for what is not given.
    rates: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_id("tenant id", self.tenant_id)
        for tier in (self.default_tier, *self.allowed_tiers):
            if tier not in TIERS:
                raise TenantError(f"unknown tier {tier!r}; tiers are {', '.join(TIERS)}")
        if self.default_tier not in self.allowed_tiers:
            raise TenantError(f"the default tier {self.default_tier!r} must be one of the "
                              f"allowed tiers ({', '.join(self.allowed_tiers)})")
        if self.retention_s < 0:
            raise TenantError("retention must be 0 (the default) or a number of seconds")
        for name, text in self.rates.items():
            if name not in (*TIERS, "tenant"):
                raise TenantError(f"rate for {name!r}: rates are set per tier "
                                  f"({', '.join(TIERS)}) or for the whole `tenant`")
            try:
                if not (name == "tenant" and text == "off"):
                    Rate.parse(text)
            except ValueError as exc:
                raise TenantError(f"rate for {name!r}: {exc}") from exc
        for name, percent in self.flags.items():
            if not isinstance(percent, int) or not 0 <= percent <= 100:
                raise TenantError(f"flag {name!r}: rollout must be a percentage 0-100")

    def tier_for(self, claimed: str | None) -> str:
        """The tier a user gets: the claimed one if the tenant allows it, else the default."""
        return claimed if claimed in self.allowed_tiers else self.default_tier

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> TenantConfig:
        """Read a stored configuration. Fields this version does not know are ignored, so
        a configuration written by a newer ``parley tenant`` still works on older gateways
        during a rolling upgrade."""
        data = _known(cls, json.loads(raw))
        jwt = _known(JwtConfig, data.pop("jwt"))
        branding = _known(Branding, data.pop("branding", {}))
        return cls(
            jwt=JwtConfig(**{**jwt, "algorithms": tuple(jwt["algorithms"])}),
            branding=Branding(**{**branding,
                                 "suggestions": tuple(branding.get("suggestions", ()))}),
            allowed_tiers=tuple(data.pop("allowed_tiers")),
            allowed_origins=tuple(data.pop("allowed_origins")),
            **data,
        )


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def flag_enabled(config: TenantConfig, flag: str, user_id: str) -> bool:
    """Whether ``flag`` is on for the user: their bucket is below the flag's percentage."""
    return in_rollout(config.tenant_id, user_id, config.flags.get(flag, 0))


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    tenant_id: str
    key_id: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: ``key`` is shown once and never stored."""

    key_id: str
    key: str


def _config_key(tenant_id: str) -> str:
    return f"parley:{{tenant:{tenant_id}}}:config"


def _keys_key(tenant_id: str) -> str:
    return f"parley:{{tenant:{tenant_id}}}:keys"


def _api_key_key(key_hash: str) -> str:
    return f"parley:{{apikey:{key_hash}}}"


class TenantStore:
    """Tenants' configurations and API keys in Redis Cluster, with a short in-process cache.

    Redis errors propagate (the gateway answers 503: nobody is let in unchecked).
    """

    def __init__(self, redis: RedisCluster, *, cache_ttl_s: float = CACHE_TTL_S) -> None:
        self.redis = redis
        # One read at a time per tenant or key: when an entry expires, every message
        # that asks meanwhile waits for the same read. (A busy gateway lets 80 held
        # messages on in one loop turn; each reading the configuration for itself took
        # the cluster client's every connection to that primary, and the numbering
        # asked in the same turn was refused: "unavailable" to a few users, every
        # few minutes of a sustained run.) A failed read is not kept.
        self._configs = alru_cache(maxsize=CACHE_SIZE, ttl=cache_ttl_s)(self._read_config)
        self._api_keys = alru_cache(maxsize=CACHE_SIZE, ttl=cache_ttl_s)(self._read_api_key)

    # -- configuration -------------------------------------------------------

    async def get(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's configuration, or None if there is no such tenant (cached)."""
        return await self._configs(tenant_id)

    async def _read_config(self, tenant_id: str) -> TenantConfig | None:
        raw = await self.redis.get(_config_key(tenant_id))
        return None if raw is None else TenantConfig.from_json(raw)

    async def create(self, config: TenantConfig) -> None:
        """Store a new tenant; :class:`TenantError` if it exists."""
        if not await self.redis.set(_config_key(config.tenant_id), config.to_json(), nx=True):
            raise TenantError(f"tenant {config.tenant_id!r} exists already")

    async def put(self, config: TenantConfig) -> None:
        """Store the tenant's configuration, replacing what was there."""
        await self.redis.set(_config_key(config.tenant_id), config.to_json())
        self._configs.cache_invalidate(config.tenant_id)

    async def require(self, tenant_id: str) -> TenantConfig:
        config = await self.get(tenant_id)
        if config is None:
            raise TenantError(f"no tenant {tenant_id!r} (create it with `parley tenant "
                              f"create {tenant_id}`)")
        return config

    # -- API keys ------------------------------------------------------------

    async def create_api_key(self, tenant_id: str) -> NewApiKey:
        """A new key for the tenant's backends; older keys keep working until revoked."""
        await self.require(tenant_id)
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = f"k-{secrets.token_hex(6)}"
        key_hash = hash_api_key(key)
        record = ApiKeyRecord(tenant_id, key_id, time.time())
        await self.redis.set(_api_key_key(key_hash), json.dumps(asdict(record)))
        await self.redis.hset(_keys_key(tenant_id), key_id, key_hash)
        return NewApiKey(key_id, key)

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> ApiKeyRecord:
        """Mark the key revoked (it is refused from now on, by every gateway within
        :data:`CACHE_TTL_S`); revoking a revoked key keeps its first revocation time."""
        key_hash = await self.redis.hget(_keys_key(tenant_id), key_id)
        if key_hash is None:
            raise TenantError(f"tenant {tenant_id!r} has no API key {key_id!r}")
        key_hash = key_hash.decode() if isinstance(key_hash, bytes) else key_hash
        record = await self._read_api_key(key_hash)
        if record is None:
            raise TenantError(f"API key {key_id!r} of {tenant_id!r} has no record")
        if record.revoked_at is None:
            record = ApiKeyRecord(record.tenant_id, record.key_id, record.created_at,
                                  time.time())
            await self.redis.set(_api_key_key(key_hash), json.dumps(asdict(record)))
        self._api_keys.cache_invalidate(key_hash)
        return record

    async def api_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        """Every key of the tenant, revoked ones included, oldest first."""
        hashes = await self.redis.hgetall(_keys_key(tenant_id))
        records = [await self._read_api_key(h.decode() if isinstance(h, bytes) else h)
                   for h in hashes.values()]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    async def find_api_key(self, key: str) -> ApiKeyRecord | None:
        """The record of the key the client sent, or None if it is unknown (cached)."""
        return await self._api_keys(hash_api_key(key))

    async def _read_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        raw = await self.redis.get(_api_key_key(key_hash))
        return None if raw is None else ApiKeyRecord(**json.loads(raw))

    # -- usage ---------------------------------------------------------------

    async def usage(self, tenant_id: str) -> dict[str, int]:
        """The tenant's usage counters (streams/usage.py counts them, gateways and
        workers alike)."""
        return await read_usage(self.redis, tenant_id)


def new_hs256_secret() -> str:
    return secrets.token_urlsafe(48)


def tenant_config(tenant_id: str, *, tiers: Sequence[str] = ("default",),
                  default_tier: str | None = None, origins: Sequence[str] = (),
                  issuer: str = "parley", audience: str | None = None,
                  jwks_url: str = "", algorithms: Sequence[str] | None = None,
                  secret: str | None = None, **extra: Any) -> TenantConfig:
    """A new tenant's configuration with sensible defaults: HS256 with a fresh secret
    (plus RS256 when a JWKS URL is given), audience ``parley:<tenant>``."""
    if algorithms is None:
        algorithms = ("HS256", "RS256") if jwks_url else ("HS256",)
    needs_secret = any(alg in HMAC_ALGORITHMS for alg in algorithms)
    jwt = JwtConfig(issuer=issuer, audience=audience or f"parley:{tenant_id}",
                    algorithms=tuple(algorithms), jwks_url=jwks_url,
                    hs256_secret=(secret or new_hs256_secret()) if needs_secret else "")
    return TenantConfig(tenant_id, jwt, default_tier=default_tier or tiers[0],
                        allowed_tiers=tuple(tiers), allowed_origins=tuple(
                            o.rstrip("/") for o in origins), **extra)

