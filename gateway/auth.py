"""Who a connection is: verified credentials in, a :class:`Principal` out.

Two kinds of credentials open ``/ws`` (docs/protocol.md):

* an end user's **JWT**, in ``?token=`` (browsers cannot set headers on a WebSocket) or
  ``Authorization: Bearer``. The token's ``tenant`` claim names the tenant whose
  settings verify it (gateway/tenants.py); until the signature is checked that claim is
  only a hint of which key to try, and a token signed by another tenant's key fails.
  The algorithm must be on the tenant's allow-list (the token's own ``alg`` is never
  trusted: RFC 8725 §2.1), so ``none``, or an HS256 token made with an RS256 tenant's
  public key, is refused before any key is used. HMAC algorithms use the tenant's
  shared secret; public-key ones the key named by ``kid`` in the tenant's JWKS, which
  PyJWT's ``PyJWKClient`` fetches, caches and fetches again when an unknown ``kid``
  shows up (key rotation). ``exp``, ``nbf``, ``aud``, ``iss`` and ``sub`` are required;
  times are checked with a bounded leeway for clock skew.
* a tenant backend's **API key** (``X-Parley-Key``), with the user it speaks for in
  ``?user=``: the tenant vouches for its user (server-side clients, the load benchmark).

Every refusal is an :class:`AuthError` carrying the HTTP status the handshake answers
with (401: no or bad credentials; 403: valid credentials, not allowed here; 503: the
credentials could not be checked now) and a reason the client may read. Reasons name
what was wrong with the credentials, never a secret or a stored value.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from jwt import PyJWKClient

from gateway.tenants import HMAC_ALGORITHMS, TenantConfig, TenantError, TenantStore
from kernel.errors import ParleyError
from streams.keys import InvalidIdError, validate_id

__all__ = [
    "MAX_LEEWAY_S",
    "AuthError",
    "Authenticator",
    "Credentials",
    "Principal",
    "check_origin",
    "credentials_from",
    "mint_token",
]

logger = logging.getLogger(__name__)

#: The most clock skew a gateway may forgive (PARLEY_JWT_LEEWAY_S is capped at it): more
#: would keep an expired token usable for longer than its issuer meant.
MAX_LEEWAY_S = 300.0
_MAX_ROLES = 32
_REQUIRED_CLAIMS = ["exp", "nbf", "aud", "iss", "sub"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection or request is, from verified credentials only."""

    tenant_id: str
    user_id: str
    tier: str
    roles: frozenset[str]


class AuthError(ParleyError):
    """Credentials refused; ``status`` is the HTTP status of the refusal, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status, self.reason = status, reason

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a handshake presented; nothing of it is verified yet."""

    token: str | None = None
    api_key: str | None = None
    user: str | None = None  # the user an API key speaks for
    origin: str | None = None


def credentials_from(path: str, headers: Mapping[str, str] | Any) -> Credentials:
    """The credentials in a ``/ws`` request's URL and headers (``headers.get`` is used)."""
    query = parse_qs(urlsplit(path).query)
    token = None
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
        if token is None:
            raise AuthError(401, "Authorization must be 'Bearer <token>'")
    elif "token" in query:
        token = query["token"][0]
    user = query.get("user", [None])[0]
    return Credentials(token=token or None, api_key=headers.get("X-Parley-Key") or None,
                       user=user, origin=headers.get("Origin"))


def check_origin(config: TenantConfig, origin: str | None) -> None:
    """Refuse (403) a browser page from an origin the tenant did not allow. Clients
    that are not browsers send no ``Origin`` and are judged by their credentials alone."""
    if origin is not None and not config.origin_allowed(origin):
        raise AuthError(403, f"origin {origin[:100]!r} is not allowed for this tenant")


class Authenticator:
    """Verifies credentials against the tenants' settings (one per gateway).

    ``jwks_cooldown_s`` bounds how often an unknown ``kid`` makes the gateway fetch a
    tenant's JWKS again: a key rotated in is found within that, and a stream of made-up
    ``kid``s cannot turn into a stream of requests to the tenant's identity provider.
    """

    def __init__(self, tenants: TenantStore, *, leeway_s: float = 30.0,
                 jwks_cooldown_s: float = 5.0, jwks_timeout_s: float = 5.0) -> None:
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway must be 0-{MAX_LEEWAY_S:g} s, not {leeway_s}")
        self.tenants = tenants
        self.leeway_s = leeway_s
        self._jwks_cooldown = jwks_cooldown_s
        self._jwks_timeout = jwks_timeout_s
        self._jwks: dict[str, PyJWKClient] = {}

    async def authenticate(self, credentials: Credentials) -> tuple[Principal, TenantConfig]:
        """The principal the credentials prove, and its tenant's configuration."""
        if credentials.api_key is not None:
            return await self.verify_api_key(credentials.api_key, credentials.user)
        if credentials.token is not None:
            return await self.verify_token(credentials.token)
        raise AuthError(401, "missing credentials: send a token (?token= or Authorization: "
                             "Bearer) or a tenant API key (X-Parley-Key)")

    async def verify_api_key(self, key: str, user: str | None
                             ) -> tuple[Principal, TenantConfig]:
        record = await self.tenants.find_api_key(key)
        if record is None:
            raise AuthError(401, "unknown API key")
        if record.revoked_at is not None:
            raise AuthError(401, "API key revoked")
        if user is None:
            raise AuthError(401, "an API key speaks for a user: add ?user=<id>")
        config = await self.tenants.get(record.tenant_id)
        if config is None:
            raise AuthError(401, "the API key's tenant no longer exists")
        try:
            validate_id("user", user)
        except InvalidIdError as exc:
            raise AuthError(401, str(exc)) from exc
        return Principal(config.tenant_id, user, config.default_tier, frozenset()), config

    async def verify_token(self, token: str) -> tuple[Principal, TenantConfig]:
        try:
            header = jwt.get_unverified_header(token)
            hint = jwt.decode(token, options={"verify_signature": False}).get("tenant")
        except jwt.PyJWTError as exc:
            raise AuthError(401, "malformed token") from exc
        if not isinstance(hint, str):
            raise AuthError(401, "token has no tenant claim")
        try:
            config = await self.tenants.get(validate_id("tenant", hint))
        except InvalidIdError as exc:
            raise AuthError(401, "token names an invalid tenant") from exc
        if config is None:
            raise AuthError(401, "token names an unknown tenant")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.jwt.algorithms:
            raise AuthError(401, f"token algorithm {str(alg)[:20]!r} is not allowed for "
                                 "this tenant")
        key: Any = (config.jwt.hs256_secret if alg in HMAC_ALGORITHMS
                    else await self._public_key(config, token))
        claims = self._decode(token, key, alg, config)
        if claims.get("tenant") != config.tenant_id:  # the signed claim, not the hint
            raise AuthError(401, "token tenant does not match its signing key")
        return _principal(claims, config), config

    def _decode(self, token: str, key: Any, alg: str, config: TenantConfig) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=config.jwt.audience,
                issuer=config.jwt.issuer, leeway=self.leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )  # fmt: skip
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError(401, "token not yet valid (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(401, "token audience is not this tenant's") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(401, "token issuer is not this tenant's") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError(401, "token signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token ({type(exc).__name__})") from exc
        return claims

    async def _public_key(self, config: TenantConfig, token: str) -> Any:
        url = config.jwt.jwks_url
        client = self._jwks.get(url)
        if client is None:
            client = self._jwks[url] = PyJWKClient(
                url, cache_jwk_set=True, lifespan=300, timeout=self._jwks_timeout,
                cooldown_duration=self._jwks_cooldown)
        try:  # PyJWKClient blocks on HTTP when it fetches: keep that off the event loop
            signing_key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("gateway.auth.jwks_unreachable tenant=%s error=%s",
                           config.tenant_id, exc)
            raise AuthError(503, "cannot fetch the tenant's signing keys now") from exc
        except jwt.PyJWTError as exc:  # no kid, or a kid the key set does not have
            raise AuthError(401, "token signing key (kid) is unknown") from exc
        return signing_key.key


def _principal(claims: Mapping[str, Any], config: TenantConfig) -> Principal:
    try:
        user = validate_id("user", str(claims["sub"]))
    except InvalidIdError as exc:
        raise AuthError(401, f"token subject: {exc}") from exc
    roles = claims.get("roles", [])
    if not (isinstance(roles, list) and len(roles) <= _MAX_ROLES
            and all(isinstance(r, str) and 0 < len(r) <= 64 for r in roles)):
        raise AuthError(401, f"token roles must be a list of at most {_MAX_ROLES} names")
    tier = claims.get("tier")
    return Principal(config.tenant_id, user, config.tier_for(tier if isinstance(tier, str)
                                                             else None), frozenset(roles))


def mint_token(config: TenantConfig, user_id: str, *, tier: str | None = None,
               roles: Iterable[str] = (), ttl_s: float = 3600,
               now: float | None = None) -> str:
    """A token for ``user_id`` signed with the tenant's shared secret (``parley token``,
    development mode, tests). :class:`TenantError` if the tenant verifies no HMAC tokens."""
    alg = next((a for a in config.jwt.algorithms if a in HMAC_ALGORITHMS), None)
    if alg is None:
        raise TenantError(f"tenant {config.tenant_id!r} verifies tokens from its JWKS only: "
                          "mint them with its identity provider")
    validate_id("user", user_id)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": config.jwt.issuer, "aud": config.jwt.audience, "sub": user_id,
        "tenant": config.tenant_id, "iat": issued, "nbf": issued,
        "exp": issued + int(ttl_s), "jti": uuid.uuid4().hex,
    }  # fmt: skip
    if tier is not None:
        claims["tier"] = tier
    if roles := sorted(roles):
        claims["roles"] = roles
    return jwt.encode(claims, config.jwt.hs256_secret, algorithm=alg)
