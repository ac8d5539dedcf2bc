"""Tiered rate limits per user and per tenant, shared by every gateway through Redis Cluster.

Without them one user could send thousands of messages a second; the only brake was
the gateway-wide in-flight limit (gateway/admission.py), which then refused everybody.
Here every message is checked against two limits before it costs anything downstream:
its user's (by tier: ``default``, ``authenticated``, ``premium``) and its tenant's (all
its users together). A refused message gets ``rate_limited`` with ``retry_after``; it
takes no sequence number and is not published. The in-flight limit stays as the last
resort.

The algorithm is GCRA (the generic cell rate algorithm, as redis-cell implements it):
one number per key, the *theoretical arrival time* (TAT) of the next message at the
sustained rate. With an emission interval ``T = 60 s / rate`` and ``burst`` messages
allowed at once, a message at ``now`` is allowed when ``max(TAT, now) + T - now <=
burst * T`` and then moves TAT there; otherwise it must wait the excess. One stored
number per key, no refill loop, and an exact ``retry_after``. :func:`gcra` is the
arithmetic in Python (unit-tested); :data:`_CHECK` is the same in Lua.

Atomic and shared: one Lua script checks the user's and the tenant's keys together and
moves both TATs only when both allow, so a refused message spends neither allowance.
Both keys carry the tenant's hash tag (``parley:{rl:TENANT}:user:U``,
``parley:{rl:TENANT}:tenant``) so they live in one slot: every message of a tenant
touches the tenant key anyway, so tagging its users' keys with it adds no hot spot. The
clock is Redis's ``TIME`` on that primary, not each gateway's, so gateways whose clocks
differ still share one limit. Checks that arrive while one request is at Redis go
together in the next, one script call per primary (:func:`streams.state.on_each_primary`),
as sequence numbers do (gateway/sequences.py): a call per message cost ~90 µs of a
gateway's CPU.

Redis unavailable: the check **fails open** (the message is let through) and
``parley_gateway_rate_limit_unavailable_total`` counts it. The message still needs its
sequence number from Redis: when its conversation's shard is down too it is refused as
``unavailable`` anyway, and when only the limits' shard is down the conversation keeps
working, with the gateway-wide in-flight limit as the brake. Refusing instead would let
one shard's outage stop every conversation of a tenant, the failure gateway/sequences.py
is built to avoid.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from redis.asyncio.cluster import RedisCluster

from gateway import metrics
from kernel.settings import Settings
from streams.keys import PREFIX, validate_id
from streams.state import on_each_primary

__all__ = [
    "TIERS",
    "Decision",
    "Limits",
    "Rate",
    "RateLimiter",
    "decision",
    "gcra",
    "limit_keys",
]

logger = logging.getLogger(__name__)

#: The tiers a principal may have, from least to most allowed.
TIERS = ("default", "authenticated", "premium")

_MICROS_PER_MINUTE = 60_000_000
_RATE_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*:\s*([0-9]+)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_minute`` messages a minute on average, ``burst`` of them at once."""

    per_minute: float
    burst: int

    def __post_init__(self) -> None:
        if not (0 < self.per_minute < math.inf) or self.burst < 1:
            raise ValueError(f"a rate needs messages a minute > 0 and a burst >= 1, got "
                             f"{self.per_minute}/min burst {self.burst}")
        if self.interval_us < 1:
            raise ValueError(f"{self.per_minute} messages a minute is more than one a µs")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"60:10"``: 60 messages a minute, a burst of 10."""
        match = _RATE_TEXT.fullmatch(text)
        if match is None:
            raise ValueError(f"a rate is written `messages a minute:burst`, not {text[:40]!r}")
        return cls(float(match[1]), int(match[2]))

    @property
    def interval_us(self) -> int:
        """The emission interval: microseconds between messages at the sustained rate."""
        return round(_MICROS_PER_MINUTE / self.per_minute)


@dataclass(frozen=True)
class Limits:
    """The rate of one user of each tier, and of a whole tenant (``None``: unlimited).

    A tenant's configuration supplies its own; :meth:`from_settings` gives the defaults.
    An unknown tier gets the ``default`` tier's rate (the least allowed).
    """

    tiers: Mapping[str, Rate]
    tenant: Rate | None = None

    def __post_init__(self) -> None:
        if "default" not in self.tiers:
            raise ValueError(f"limits need a rate for the `default` tier; got tiers "
                             f"{sorted(self.tiers)}")
        object.__setattr__(self, "tiers", MappingProxyType(dict(self.tiers)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        tiers = {"default": Rate.parse(settings.rate_default),
                 "authenticated": Rate.parse(settings.rate_authenticated),
                 "premium": Rate.parse(settings.rate_premium)}
        tenant = None if settings.rate_tenant == "off" else Rate.parse(settings.rate_tenant)
        return cls(tiers, tenant)

    def for_tier(self, tier: str) -> Rate:
        return self.tiers.get(tier) or self.tiers["default"]

    def overridden(self, rates: Mapping[str, str]) -> Limits:
        """These limits with a tenant's own rates (``{"premium": "2000:200",
        "tenant": "off"}``: tier → ``rate:burst``; ``tenant`` is the tenant-wide one)."""
        tiers = {**self.tiers, **{tier: Rate.parse(text) for tier, text in rates.items()
                                  if tier != "tenant"}}
        tenant = self.tenant
        if "tenant" in rates:
            tenant = None if rates["tenant"] == "off" else Rate.parse(rates["tenant"])
        return Limits(tiers, tenant)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one message may go; if not, how long until it may (seconds)."""

    allowed: bool
    retry_after_s: float = 0.0
    limited_by: str | None = None  # "user" or "tenant" when refused


ALLOWED = Decision(True)


def gcra(tat_us: int | None, now_us: int, rate: Rate) -> tuple[int, int]:
    """One GCRA step: ``(new_tat_us, wait_us)``. ``wait_us`` 0: allowed, and the stored
    TAT becomes ``new_tat_us``; above 0: refused for that long, and the TAT stays."""
    interval = rate.interval_us
    new_tat = max(tat_us if tat_us is not None else now_us, now_us) + interval
    return new_tat, max(0, new_tat - now_us - rate.burst * interval)


def limit_keys(tenant_id: str, user_id: str) -> tuple[str, str]:
    """The user's and the tenant's key; one hash tag, so one slot."""
    validate_id("tenant id", tenant_id)
    validate_id("user id", user_id)
    tag = f"{PREFIX}:{{rl:{tenant_id}}}"
    return f"{tag}:user:{user_id}", f"{tag}:tenant"


# ARGV: per check 6 values: user key, user interval µs, user burst, tenant key ('' for
# none), tenant interval µs, tenant burst. Returns per check the user's and the tenant's
# wait in µs (0 and 0: allowed, and both TATs moved). The keys are in ARGV, with the
# allow-cross-slot-keys flag, as in streams/state.py: one call per primary for a batch.
_CHECK = """#!lua flags=allow-cross-slot-keys
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #ARGV, 6 do
  local waits, tats = {0, 0}, {}
  for j = 0, 1 do
    local key = ARGV[i + 3 * j]
    if key ~= '' then
      local interval = tonumber(ARGV[i + 3 * j + 1])
      local burst = tonumber(ARGV[i + 3 * j + 2])
      local tat = tonumber(redis.call('GET', key) or now)
      if tat < now then tat = now end
      local new_tat = tat + interval
      local wait = new_tat - now - burst * interval
      if wait > 0 then waits[j + 1] = wait end
      tats[#tats + 1] = {key, new_tat}
    end
  end
  if waits[1] == 0 and waits[2] == 0 then
    for _, kv in ipairs(tats) do
      local ttl_ms = math.ceil((kv[2] - now) / 1000)
      redis.call('SET', kv[1], string.format('%d', kv[2]), 'PX', ttl_ms)
    end
  end
  out[#out + 1] = waits[1]
  out[#out + 1] = waits[2]
end
return out
"""


def decision(user_wait_us: int, tenant_wait_us: int) -> Decision:
    """The decision the script's two waits make."""
    if user_wait_us <= 0 and tenant_wait_us <= 0:
        return ALLOWED
    by = "user" if user_wait_us >= tenant_wait_us else "tenant"
    # Rounded up to the millisecond: a client that waits exactly this long is let in.
    return Decision(False, math.ceil(max(user_wait_us, tenant_wait_us) / 1000) / 1000, by)


_Check = tuple[str, int, int, str, int, int]
#: After Redis failed a check, checks are let through without asking it for this long:
#: during an outage each message would otherwise first wait out the client's timeouts
#: (and its search for a node that answers) before its own sequence number is refused.
OUTAGE_SKIP_S = 5.0
#: The longest a check waits for Redis before it is let through.
CHECK_TIMEOUT_S = 1.0
#: Refused users remembered (RateLimiter.check) before the ended refusals are dropped.
_MAX_REFUSED = 10_000


class RateLimiter:
    """Checks messages against the limits in Redis, in batches (see the module's doc)."""

    def __init__(self, redis: RedisCluster, *, max_batch: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._clock = clock
        self._waiting: list[tuple[_Check, asyncio.Future[Decision]]] = []
        self._sending: asyncio.Task[None] | None = None
        #: user key -> (when its refusal ends, who refused it)
        self._refused: dict[str, tuple[float, str | None]] = {}
        self._skip_until = -math.inf  # Redis failed: let checks through until then

    async def check(self, tenant_id: str, user_id: str, tier: str, limits: Limits) -> Decision:
        """May this user of this tenant send one more message now? Counts it if so.

        A refused user is refused here, without asking Redis, until its ``retry_after``
        has passed: no gateway can make that wait shorter (time only shortens it, other
        messages only lengthen it), so a flood costs Redis one call, not one a message.
        """
        user_key, tenant_key = limit_keys(tenant_id, user_id)
        if self._clock() < self._skip_until:  # Redis failed moments ago: fail open at once
            metrics.RATE_LIMIT_UNAVAILABLE.inc()
            return ALLOWED
        if (refused := self._known_refusal(user_key)) is not None:
            return refused
        user_rate = limits.for_tier(tier)
        tenant = limits.tenant
        check: _Check = (user_key, user_rate.interval_us, user_rate.burst,
                         tenant_key if tenant else "", tenant.interval_us if tenant else 0,
                         tenant.burst if tenant else 0)
        asked = self._clock()  # Redis's clock read later: the refusal ends no sooner
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting.append((check, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        decided = await future
        if not decided.allowed:
            if len(self._refused) >= _MAX_REFUSED:  # forget the refusals that have ended
                now = self._clock()
                self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
            self._refused[user_key] = (asked + decided.retry_after_s, decided.limited_by)
        return decided

    def refused(self, tenant_id: str, user_id: str) -> Decision | None:
        """The refusal this gateway already holds for this user (its ``retry_after`` not
        over yet), without asking Redis; None when there is none. The gateway answers a
        flood with it before the message is held or counted as busy traffic
        (gateway/sequences.py), so a flooder never slows anybody else's messages."""
        return self._known_refusal(limit_keys(tenant_id, user_id)[0])

    def _known_refusal(self, user_key: str) -> Decision | None:
        if (refused := self._refused.get(user_key)) is None:
            return None
        left = refused[0] - self._clock()
        if left > 0:
            return Decision(False, math.ceil(left * 1000) / 1000, refused[1])
        del self._refused[user_key]
        return None

    async def _send(self) -> None:
        try:
            while self._waiting:  # what came while Redis answered goes in the next call
                taken, self._waiting = self._waiting, []
                for start in range(0, len(taken), self._max_batch):
                    await self._ask(taken[start:start + self._max_batch])
        except asyncio.CancelledError:
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sending = None

    async def _ask(self, batch: list[tuple[_Check, asyncio.Future[Decision]]]) -> None:
        try:
            waits = await asyncio.wait_for(on_each_primary(self._redis, _CHECK, [
                (check[0], check) for check, _ in batch
            ], per_call=2, settle=True), CHECK_TIMEOUT_S)  # fmt: skip
        except Exception as exc:  # the cluster's layout unknown, or slow: all fail open
            waits = [exc] * len(batch)
        failed = [r for r in waits if isinstance(r, Exception)]
        if failed:  # once a batch: an outage must not flood the log
            self._skip_until = self._clock() + OUTAGE_SKIP_S
            metrics.RATE_LIMIT_UNAVAILABLE.inc(len(failed))
            logger.warning("gateway.rate_limit.unavailable checks=%d error=%r (let through)",
                           len(failed), failed[0])
        for (_, future), result in zip(batch, waits, strict=True):
            if future.done():  # its socket went
                continue
            if isinstance(result, Exception):
                future.set_result(ALLOWED)
            else:
                future.set_result(decision(int(result[0]), int(result[1])))

    async def close(self) -> None:
        """Wait for the request at Redis (bounded by the client's timeouts)."""
        if self._sending is not None:
            await asyncio.wait([self._sending])
