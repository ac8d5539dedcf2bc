"""Messages a conversation gets without the user asking: a backend's callback (the outcome
of an asynchronous action) and a business event (an order shipped). Shared by the gateway
(which takes callbacks and business events over HTTP), the workers (which mint callback
URLs, map business events to conversations and say them) and the reference CRM (which
signs what it sends): so it lives here, below all three.

**Callback URLs carry a correlation token.** The action that starts asynchronous work
gives the backend ``{PARLEY_CALLBACK_BASE_URL}/callbacks/{backend}/{token}``: the token is
a JWT (HS256, PyJWT) signed with ``PARLEY_CALLBACK_TOKEN_SECRET``, a secret only Parley's
workers and gateways hold, naming the tenant, conversation, user, channel, action and
backend, and expiring after ``PARLEY_CALLBACK_TOKEN_TTL_S``. A backend can therefore
answer only the conversation it was given: it cannot forge or edit a token to address
another conversation, or another tenant's, and a token given to one backend is refused
on another backend's path.

**Backends sign what they POST.** ``X-Parley-Signature: v1=<hex HMAC-SHA256(secret,
"{X-Parley-Timestamp}.{raw body}")>``, the secret per backend from the gateway's
environment (``PARLEY_CALLBACK_SECRET_<BACKEND>``), compared in constant time; a
timestamp more than five minutes from now is refused (Slack's and Stripe's scheme). The
body names a ``callback_id`` (or ``event_id``) that the gateway records with Redis
``SET NX`` for the replay window, so a captured request sent again is refused.

**Notices.** Both become a ConversationNotice (schemas/conversation_notice.avsc) on
``conversation.notices``, keyed by conversation like ``chat.inbound``: the dialogue step
(the conversation's single writer) says the bot response it names, templated with its
data, with the next reply seq: a user offline or on another gateway gets it from the
outbox when they resume (``last_seq``).

**Business events and customers.** A business event (schemas/business_event.avsc, topic
``business.events``) names a tenant's customer (the conversation's user id). The
conversations of each customer are indexed in Redis (:class:`CustomerIndex`); an event
for a customer with no open conversation waits, bounded, until their next session starts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jwt
from redis.asyncio.cluster import RedisCluster

from kernel.errors import ConfigError, ParleyError
from streams.keys import PREFIX, validate_id

__all__ = ["MAX_CLOCK_SKEW_S", "NOTICE_KINDS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER",
           "CallbackClaims", "CallbackRefused", "CallbackSettings", "CustomerIndex",
           "ReplayGuard", "callback_url", "mint_callback_token", "notice_event",
           "read_callback_token", "sign_body", "verify_signature"]

MAX_CLOCK_SKEW_S = 5 * 60
SIGNATURE_HEADER = "X-Parley-Signature"
TIMESTAMP_HEADER = "X-Parley-Timestamp"
#: The ``kind`` of a ConversationNotice.
NOTICE_KINDS = frozenset({"callback", "business_event"})

_ALGORITHM = "HS256"
#: For a laptop only: a shared deployment sets PARLEY_CALLBACK_TOKEN_SECRET.
_DEV_TOKEN_SECRET = "parley-dev-callback-token-secret-not-for-production"
_AUDIENCE = "parley-callback"


class CallbackRefused(ParleyError):
    """A callback or business event the gateway refuses: ``status`` is the HTTP status
    (401: not signed by the backend, stale or replayed; 403: a token that does not name
    a conversation this backend may answer; 400: a body that is not a callback)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status, self.reason = status, reason

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


@dataclass(frozen=True)
class CallbackSettings:
    """Where callbacks come in and what signs their tokens (read from the environment).

    ``token_secret`` (``PARLEY_CALLBACK_TOKEN_SECRET``): signs correlation tokens; every
    worker and gateway shares it. ``base_url`` (``PARLEY_CALLBACK_BASE_URL``, default
    ``http://127.0.0.1:8081``): the gateways' API port as a backend reaches it.
    ``token_ttl_s`` (``PARLEY_CALLBACK_TOKEN_TTL_S``, default 7 days): how long a backend
    may take to call back.
    """

    token_secret: str
    base_url: str = "http://127.0.0.1:8081"
    token_ttl_s: int = 7 * 24 * 3600

    #: The variables read, and the prefixes of the per-backend ones (``<prefix><BACKEND>``).
    ENV: ClassVar[tuple[str, ...]] = ("PARLEY_CALLBACK_TOKEN_SECRET", "PARLEY_CALLBACK_BASE_URL",
                                      "PARLEY_CALLBACK_TOKEN_TTL_S")
    SECRET_PREFIX: ClassVar[str] = "PARLEY_CALLBACK_SECRET_"
    TENANTS_PREFIX: ClassVar[str] = "PARLEY_CALLBACK_TENANTS_"
    BACKEND_ENV_PREFIXES: ClassVar[tuple[str, ...]] = (SECRET_PREFIX, TENANTS_PREFIX)

    def __post_init__(self) -> None:
        if len(self.token_secret) < 32:  # RFC 7518 §3.2: an HS256 key of 256 bits at least
            raise ConfigError("PARLEY_CALLBACK_TOKEN_SECRET", "<hidden>",
                              "at least 32 characters")
        if self.token_ttl_s < 1:
            raise ConfigError("PARLEY_CALLBACK_TOKEN_TTL_S", str(self.token_ttl_s),
                              "a whole number of seconds >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CallbackSettings:
        env = os.environ if environ is None else environ
        ttl = env.get("PARLEY_CALLBACK_TOKEN_TTL_S", str(cls.token_ttl_s))
        try:
            ttl_s = int(ttl)
        except ValueError as exc:
            raise ConfigError("PARLEY_CALLBACK_TOKEN_TTL_S", ttl,
                              "a whole number of seconds >= 1") from exc
        return cls(env.get("PARLEY_CALLBACK_TOKEN_SECRET", _DEV_TOKEN_SECRET),
                   env.get("PARLEY_CALLBACK_BASE_URL", cls.base_url).rstrip("/"), ttl_s)

    @staticmethod
    def backend_secret(backend: str, environ: Mapping[str, str] | None = None) -> str | None:
        """The secret ``backend`` signs its callbacks with
        (``PARLEY_CALLBACK_SECRET_<BACKEND>``); None when it has none (its callbacks are
        refused)."""
        env = os.environ if environ is None else environ
        return env.get(CallbackSettings.backend_variable(CallbackSettings.SECRET_PREFIX,
                                                         backend)) or None

    @staticmethod
    def backend_variable(prefix: str, backend: str) -> str:
        """The variable ``prefix`` names for ``backend``: ``crm-eu`` → ``<prefix>CRM_EU``."""
        return prefix + backend.upper().replace("-", "_").replace(".", "_")


@dataclass(frozen=True, slots=True)
class CallbackClaims:
    """What a correlation token names: the conversation a callback answers."""

    tenant_id: str
    conversation_id: str
    user_id: str
    channel: str
    action: str
    backend: str


def mint_callback_token(settings: CallbackSettings, claims: CallbackClaims,
                        now: float | None = None) -> str:
    """A signed token naming ``claims``, valid ``settings.token_ttl_s``."""
    issued = int(time.time() if now is None else now)
    return jwt.encode({"aud": _AUDIENCE, "iat": issued, "exp": issued + settings.token_ttl_s,
                       "t": claims.tenant_id, "c": claims.conversation_id, "u": claims.user_id,
                       "ch": claims.channel, "a": claims.action, "b": claims.backend},
                      settings.token_secret, algorithm=_ALGORITHM)


def callback_url(settings: CallbackSettings, claims: CallbackClaims,
                 now: float | None = None) -> str:
    """Where ``claims.backend`` POSTs the outcome of ``claims.action``."""
    return (f"{settings.base_url}/callbacks/{claims.backend}/"
            f"{mint_callback_token(settings, claims, now)}")


def read_callback_token(settings: CallbackSettings, token: str, backend: str,
                        now: float | None = None) -> CallbackClaims:
    """The claims of a token, checked: Parley's signature, not expired, issued for
    ``backend``; else :class:`CallbackRefused` (403)."""
    try:
        data = jwt.decode(token, settings.token_secret, algorithms=[_ALGORITHM],
                          audience=_AUDIENCE, options={"require": ["exp", "aud"]})
        if now is not None and int(data["exp"]) < now:
            raise jwt.ExpiredSignatureError("expired")
        claims = CallbackClaims(str(data["t"]), str(data["c"]), str(data["u"]),
                                str(data["ch"]), str(data["a"]), str(data["b"]))
        validate_id("tenant id", claims.tenant_id)
        validate_id("conversation id", claims.conversation_id)
    except jwt.ExpiredSignatureError as exc:
        raise CallbackRefused(403, "the callback token has expired") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
        raise CallbackRefused(403, "the callback token is not one Parley issued") from exc
    if claims.backend != backend:
        raise CallbackRefused(403, f"the callback token was not issued to {backend!r}")
    return claims


def sign_body(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Parley-Signature`` value of ``body`` sent at ``timestamp`` (epoch seconds)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(secret: str | None, timestamp: str | None, signature: str | None,
                     body: bytes, now: float | None = None) -> None:
    """Raise :class:`CallbackRefused` (401) unless ``signature`` is the backend's over
    ``timestamp`` and ``body`` and ``timestamp`` is within five minutes of now."""
    if secret is None:
        raise CallbackRefused(401, "this backend has no callback secret configured")
    if not timestamp or not signature:
        raise CallbackRefused(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        sent = int(timestamp)
    except ValueError as exc:
        raise CallbackRefused(401, f"{TIMESTAMP_HEADER} is not epoch seconds") from exc
    if abs((time.time() if now is None else now) - sent) > MAX_CLOCK_SKEW_S:
        raise CallbackRefused(401, "the timestamp is more than 5 minutes from now")
    if not hmac.compare_digest(sign_body(secret, timestamp, body), signature):
        raise CallbackRefused(401, "the signature does not match")


class ReplayGuard:
    """Each callback (by backend and id) is taken once within the replay window: one
    ``SET NX EX`` (atomic; every gateway shares it)."""

    def __init__(self, redis: RedisCluster, window_s: int = 24 * 3600) -> None:
        self._r: Any = redis
        self.window_s = window_s

    async def first(self, backend: str, callback_id: str) -> bool:
        """True the first time ``callback_id`` of ``backend`` is seen; False for a replay."""
        return bool(await self._r.set(self._key(backend, callback_id), b"1", nx=True,
                                      ex=self.window_s))

    async def forget(self, backend: str, callback_id: str) -> None:
        """Take an id back (it could not be published: the backend's retry is no replay)."""
        await self._r.delete(self._key(backend, callback_id))

    @staticmethod
    def _key(backend: str, callback_id: str) -> str:
        digest = hashlib.sha256(f"{backend}\0{callback_id}".encode()).hexdigest()
        return f"{PREFIX}:callbacks:seen:{digest}"


def notice_event(event_id: str, tenant_id: str, conversation_id: str, *, kind: str,
                 response: str, data: Mapping[str, Any], user_id: str = "",
                 channel: str = "", timestamp_ms: int | None = None) -> dict[str, Any]:
    """A ConversationNotice record (schemas/conversation_notice.avsc)."""
    if kind not in NOTICE_KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    return {"event_id": event_id, "tenant_id": tenant_id, "conversation_id": conversation_id,
            "user_id": user_id, "channel": channel, "kind": kind, "response": response,
            "data_json": json.dumps(dict(data), separators=(",", ":"), default=str),
            "timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms}


# KEYS: conversations (zset conversation -> last active ms), pending (list).
# ARGV: conversation, now_ms, ttl_s. Marks the conversation active and takes what waited
# for the customer (atomically: two sessions starting at once cannot both take it).
_TOUCH = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local waiting = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return waiting
"""

# KEYS: conversations, pending. ARGV: since_ms, notice, keep, ttl_s.
# Returns the open conversations; with none, keeps the notice (the newest `keep`).
_ROUTE = """
local open = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
if #open == 0 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return open
"""


class CustomerIndex:
    """A tenant's customer → their conversations, and what waits for their next visit.

    ``parley:{t1/cust/u7}:conversations`` (zset: conversation → last active, ms) and
    ``parley:{t1/cust/u7}:pending`` (list of JSON notices, the newest ``keep``): one hash
    tag per customer, so routing an event (open conversations, or keep it) and starting a
    session (mark active, take what waited) are each one atomic script. A conversation is
    open while it was active within ``open_s`` (the session TTL). Keys are built from the
    tenant and customer ids only: one customer's events never reach another's.
    """

    def __init__(self, redis: RedisCluster, *, open_s: int, keep: int = 20,
                 pending_ttl_s: int = 30 * 24 * 3600) -> None:
        self._touch = redis.register_script(_TOUCH)
        self._route = redis.register_script(_ROUTE)
        self.open_s, self.keep, self.pending_ttl_s = open_s, keep, pending_ttl_s

    @staticmethod
    def keys(tenant_id: str, customer_id: str) -> tuple[str, str]:
        validate_id("tenant id", tenant_id)
        validate_id("customer id", customer_id)
        tag = f"{PREFIX}:{{{tenant_id}/cust/{customer_id}}}"
        return f"{tag}:conversations", f"{tag}:pending"

    async def touch(self, tenant_id: str, customer_id: str, conversation_id: str,
                    now_ms: int) -> list[dict[str, Any]]:
        """Mark the conversation active; returns the notices that waited for the customer
        (taken: each is returned once)."""
        validate_id("conversation id", conversation_id)
        found = await self._touch(keys=list(self.keys(tenant_id, customer_id)),
                                  args=[conversation_id, now_ms, self.open_s])
        return [json.loads(raw) for raw in found]

    async def route(self, tenant_id: str, customer_id: str, notice: Mapping[str, Any],
                    now_ms: int) -> list[str]:
        """The customer's open conversations; with none, ``notice`` is kept for their
        next visit (and ``[]`` returned)."""
        found = await self._route(
            keys=list(self.keys(tenant_id, customer_id)),
            args=[now_ms - self.open_s * 1000,
                  json.dumps(dict(notice), separators=(",", ":"), default=str),
                  self.keep, self.pending_ttl_s])
        return [c.decode() if isinstance(c, bytes) else str(c) for c in found]
