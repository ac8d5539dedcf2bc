"""Degradation levels per tenant: what they are, how one is decided, and where they are kept.

Four levels (issue 33, section 4; docs/operations.md, "Degradation levels")::

    1 full         every backend and the LLM are used
    2 reduced      a backend is down: its calls fail at once (the breaker), the LLM falls
                   back to extractive answers, the CRM to "I can't reach your account"
    3 static       cached knowledge answers only: no LLM, no knowledge retrieval, no
                   backend call; a flow that needs one is told "unavailable" at once
    4 maintenance  a message is acknowledged and kept, the user told; it is processed
                   when the level drops

A tenant's level is **forced** by an operator (``parley degrade --tenant T --level N``)
or else **automatic**: 2 while a breaker of a backend the tenant's bot uses is open on any
worker, else 1. Workers report their breakers' states (:meth:`DegradationStore.report`)
every second, with the time; a report older than :data:`STALE_AFTER_MS` is ignored, so a
worker that died with an open breaker does not hold the level up.

Everything lives in Redis, one hash shared by every worker and read by each of them
every half second (one ``HGETALL``: a few dozen fields)::

    parley:{degradation}:levels    hash   tenant:T           -> JSON {level, reason, at_ms}
                                          backend:B:W        -> JSON {open, at_ms}
    parley:{degradation}:deferred  set    tenants with messages kept in maintenance
    parley:{tenant:T}:deferred     list   the kept messages (encoded ChatMessage), in order
    parley:{tenant:T}:replaying    string a worker replaying them (SET NX PX: one at a time)

Redis rather than a compacted topic: the CLI, the workers and a gateway all read it with
the client they already have, and a forced level takes effect within a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from prometheus_client import Gauge
from redis.asyncio.cluster import RedisCluster

from streams.keys import validate_id
from streams.state import REDIS_UNAVAILABLE

__all__ = ["DEGRADATION_LEVEL", "LEVELS_KEY", "STALE_AFTER_MS", "DegradationStore", "Forced",
           "Level", "Snapshot", "TenantLevel", "read_snapshot", "tenant_level"]

logger = logging.getLogger(__name__)

LEVELS_KEY = "parley:{degradation}:levels"
DEFERRED_TENANTS_KEY = "parley:{degradation}:deferred"
#: A worker's breaker report this old is ignored (workers report every second).
STALE_AFTER_MS = 15_000

DEGRADATION_LEVEL = Gauge("parley_degradation_level",
                          "The tenant's degradation level: 1 full, 2 reduced, 3 static "
                          "(cached answers only), 4 maintenance.", ["tenant"])


class Level(IntEnum):
    FULL = 1
    REDUCED = 2
    STATIC = 3
    MAINTENANCE = 4


@dataclass(frozen=True, slots=True)
class Forced:
    """A level an operator set for a tenant."""

    level: Level
    reason: str = ""
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class TenantLevel:
    """A tenant's level now, and why: ``forced`` by an operator, or automatic (then
    ``reason`` names the open backends)."""

    level: Level
    forced: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The levels as read from Redis at one moment (pure: decides, reads nothing)."""

    forced: Mapping[str, Forced] = field(default_factory=dict)
    open_backends: frozenset[str] = frozenset()

    def level(self, tenant_id: str, uses: Iterable[str] = ()) -> TenantLevel:
        """``tenant_id``'s level: the forced one, else 2 while a backend in ``uses`` (the
        backends its bot depends on) has an open breaker, else 1."""
        forced = self.forced.get(tenant_id)
        if forced is not None:
            return TenantLevel(forced.level, True, forced.reason)
        down = sorted(self.open_backends.intersection(uses))
        if down:
            return TenantLevel(Level.REDUCED, False, f"unavailable: {', '.join(down)}")
        return TenantLevel(Level.FULL)


def read_snapshot(fields: Mapping[str, str], now_ms: int) -> Snapshot:
    """A :class:`Snapshot` of the levels hash's ``fields``; unreadable fields are skipped
    (a newer writer's format must not stop the conversations)."""
    forced: dict[str, Forced] = {}
    reports: dict[str, bool] = {}
    for name, raw in fields.items():
        kind, _, rest = name.partition(":")
        try:
            value = json.loads(raw)
            if kind == "tenant":
                forced[rest] = Forced(Level(int(value["level"])), str(value.get("reason", "")),
                                      int(value.get("at_ms", 0)))
            elif kind == "backend" and now_ms - int(value["at_ms"]) <= STALE_AFTER_MS:
                backend = rest.partition(":")[0]
                reports[backend] = reports.get(backend, False) or bool(value["open"])
        except (ValueError, KeyError, TypeError):
            continue
    return Snapshot(forced, frozenset(b for b, is_open in reports.items() if is_open))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tenant_deferred(tenant_id: str) -> str:
    return f"parley:{{tenant:{tenant_id}}}:deferred"


def _tenant_replaying(tenant_id: str) -> str:
    return f"parley:{{tenant:{tenant_id}}}:replaying"


class DegradationStore:
    """The levels hash and the messages kept in maintenance, in the Redis Cluster."""

    def __init__(self, redis: RedisCluster) -> None:
        self.redis = redis

    async def snapshot(self) -> Snapshot:
        fields = await self.redis.hgetall(LEVELS_KEY)
        return read_snapshot({_text(k): _text(v) for k, v in fields.items()}, _now_ms())

    async def force(self, tenant_id: str, level: int, reason: str = "") -> Forced:
        """Force ``tenant_id`` to ``level`` until :meth:`release`; ``ValueError`` for a
        level that is not 1-4 or an unusable tenant id."""
        validate_id("tenant id", tenant_id)
        forced = Forced(Level(level), reason[:500], _now_ms())
        await self.redis.hset(LEVELS_KEY, f"tenant:{tenant_id}", json.dumps(
            {"level": int(forced.level), "reason": forced.reason, "at_ms": forced.at_ms}))
        return forced

    async def release(self, tenant_id: str) -> bool:
        """Back to automatic; True when a level was forced."""
        validate_id("tenant id", tenant_id)
        removed = await self.redis.hdel(LEVELS_KEY, f"tenant:{tenant_id}")
        return bool(removed)

    async def report(self, worker_id: str, states: Mapping[str, bool]) -> None:
        """``worker_id``'s breakers now: backend → open."""
        if not states:
            return
        at_ms = _now_ms()
        await self.redis.hset(LEVELS_KEY, mapping={
            f"backend:{backend}:{worker_id}": json.dumps({"open": is_open, "at_ms": at_ms})
            for backend, is_open in states.items()})

    async def forget(self, worker_id: str, backends: Iterable[str]) -> None:
        """Remove ``worker_id``'s reports (it stops)."""
        names = [f"backend:{b}:{worker_id}" for b in backends]
        if names:
            await self.redis.hdel(LEVELS_KEY, *names)

    async def defer(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Keep ``(tenant id, encoded ChatMessage)`` records until the level drops."""
        by_tenant: dict[str, list[bytes]] = {}
        for tenant_id, value in records:
            by_tenant.setdefault(tenant_id, []).append(value)
        for tenant_id, values in by_tenant.items():
            await self.redis.rpush(_tenant_deferred(tenant_id), *values)
            await self.redis.sadd(DEFERRED_TENANTS_KEY, tenant_id)

    async def deferred_tenants(self) -> list[str]:
        members = await self.redis.smembers(DEFERRED_TENANTS_KEY)
        return sorted(_text(m) for m in members)

    async def deferred_count(self, tenant_id: str) -> int:
        count: int = await self.redis.llen(_tenant_deferred(tenant_id))
        return count

    async def claim_replay(self, tenant_id: str, owner: str, lease_ms: int = 30_000) -> bool:
        """Whether ``owner`` may replay the tenant's kept messages now (one worker at a
        time; the lease ends by itself if it dies)."""
        return bool(await self.redis.set(_tenant_replaying(tenant_id), owner, nx=True,
                                         px=lease_ms))

    async def end_replay(self, tenant_id: str) -> None:
        await self.redis.delete(_tenant_replaying(tenant_id))

    async def peek(self, tenant_id: str, count: int) -> list[bytes]:
        """The oldest ``count`` kept messages (removed by :meth:`drop` once replayed)."""
        values = await self.redis.lrange(
            _tenant_deferred(tenant_id), 0, count - 1)
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def drop(self, tenant_id: str, count: int) -> None:
        """Remove the oldest ``count`` kept messages; forget the tenant when none is left."""
        key = _tenant_deferred(tenant_id)
        await self.redis.ltrim(key, count, -1)
        if not await self.redis.llen(key):
            await self.redis.srem(DEFERRED_TENANTS_KEY, tenant_id)
            if await self.redis.llen(key):  # kept meanwhile
                await self.redis.sadd(DEFERRED_TENANTS_KEY, tenant_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: Per Redis client: (when read, monotonic seconds; the snapshot). A gateway reads the levels
#: at most once a second however many sockets open.
_SNAPSHOTS: weakref.WeakKeyDictionary[RedisCluster, tuple[float, Snapshot]] = \
    weakref.WeakKeyDictionary()
_MAX_AGE_S = 1.0
_UNKNOWN: tuple[type[Exception], ...] = (TimeoutError, *REDIS_UNAVAILABLE)


async def tenant_level(redis: RedisCluster, tenant_id: str, *,
                       timeout_s: float = 0.5) -> int | None:
    """The tenant's level as a gateway can tell it (the welcome frame's
    ``degradation_level``): forced, else 2 while any backend's breaker is open (a gateway
    does not know which backends a tenant's bot uses). None when Redis cannot say within
    ``timeout_s``: a socket never waits on, or fails for, this."""
    now = time.monotonic()
    cached = _SNAPSHOTS.get(redis)
    if cached is None or now - cached[0] > _MAX_AGE_S:
        try:
            async with asyncio.timeout(timeout_s):
                snapshot = await DegradationStore(redis).snapshot()
        except _UNKNOWN as exc:
            logger.debug("degradation.level.unknown error=%r", exc)
            return None
        cached = (now, snapshot)
        _SNAPSHOTS[redis] = cached
    snapshot = cached[1]
    return int(snapshot.level(tenant_id, snapshot.open_backends).level)
