"""A worker's view of the tenants' degradation levels (streams/degradation.py).

Every worker keeps a :class:`~streams.degradation.Snapshot` of the levels in memory,
refreshed from Redis every half second (:meth:`TenantLevels.refresh`), so the dialogue
step asks for a tenant's level without a round trip. Each refresh also

* reports this worker's breakers (the integrations' backends and the LLM) to Redis, so the
  automatic level of every tenant follows any worker's open breaker, and
* sets ``parley_degradation_level{tenant}`` for the tenants this worker served and the
  tenants whose level is forced.

:meth:`TenantLevels.replay` puts the messages kept during maintenance (level 4) back on
``chat.inbound`` once their tenant's level is below 4, oldest first, one worker at a time
per tenant. A replayed message gets the event id ``<original>.d``: a replay repeated after
a crash is then skipped by the dialogue step like any repeated event, and a user is never
answered twice. A kept record is the conversation id, a NUL byte, and the encoded
ChatMessage (ids cannot hold a NUL: streams/keys.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from agents.integrations.actions import Integrations
from agents.knowledge.breaker import BreakerState, CircuitBreaker
from streams.app import WorkerContext, produce
from streams.degradation import (
    DEGRADATION_LEVEL,
    DegradationStore,
    Level,
    Snapshot,
    TenantLevel,
)

__all__ = ["LLM_BACKEND", "BreakerStates", "TenantLevels", "breaker_states", "kept_record",
           "read_kept_record", "register_degradation"]

logger = logging.getLogger(__name__)

#: This worker's breakers now: backend name → open.
BreakerStates = Callable[[], Awaitable[Mapping[str, bool]]]
#: Puts ``(key, value)`` records on ``chat.inbound``; returns once the broker holds them.
Produce = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[None]]

_REPLAY_BATCH = 100
#: The name the knowledge agent's LLM breaker is reported under.
LLM_BACKEND = "llm"
_OPEN = frozenset({"opened", "half-opened"})  # purgatory's: not recovered yet


def kept_record(conversation_id: str, chat_message: bytes) -> bytes:
    return conversation_id.encode() + b"\0" + chat_message


def read_kept_record(record: bytes) -> tuple[bytes, bytes]:
    """``(key, value)`` of a kept record, as it goes back on ``chat.inbound``."""
    key, _, value = record.partition(b"\0")
    return key, value


#: The backends a tenant's bot depends on (its integrations' and the LLM), by tenant.
UsesFor = Callable[[str], Iterable[str]]


class TenantLevels:
    """The levels as this worker knows them; ``uses``: the backends the bots depend on,
    the same for every tenant or each tenant's own (:data:`UsesFor`): a breaker of another
    backend does not lower a tenant's level."""

    def __init__(self, store: DegradationStore, worker_id: str,
                 uses: Iterable[str] | UsesFor, breakers: BreakerStates | None = None) -> None:
        self.store, self.worker_id = store, worker_id
        if callable(uses):
            self._uses: UsesFor = uses
        else:
            fixed = frozenset(uses)
            self._uses = lambda _tenant: fixed
        self.snapshot = Snapshot()
        self._breakers = breakers
        self._served: set[str] = set()

    def level(self, tenant_id: str) -> TenantLevel:
        """``tenant_id``'s level as of the last refresh."""
        self._served.add(tenant_id)
        return self._level_in(self.snapshot, tenant_id)

    def _level_in(self, snapshot: Snapshot, tenant_id: str) -> TenantLevel:
        # The tenant's backends matter only while some breaker is open (not per message).
        uses = self._uses(tenant_id) if snapshot.open_backends else ()
        return snapshot.level(tenant_id, uses)

    def llm_allowed(self, tenant_id: str) -> bool:
        """Whether the tenant's knowledge answers may use the LLM: not while an operator
        holds it at level 2 or more (automatically, the LLM's own breaker decides)."""
        level = self._level_in(self.snapshot, tenant_id)
        return not (level.forced and level.level >= Level.REDUCED)

    async def refresh(self) -> Snapshot:
        """Report this worker's breakers, read the levels, set the gauge."""
        if self._breakers is not None:
            await self.store.report(self.worker_id, await self._breakers())
        before = self.snapshot
        self.snapshot = await self.store.snapshot()
        for tenant_id in self._served | set(self.snapshot.forced) | set(before.forced):
            level = self._level_in(self.snapshot, tenant_id)
            DEGRADATION_LEVEL.labels(tenant_id).set(int(level.level))
            if level != self._level_in(before, tenant_id):
                logger.warning("degradation.level tenant=%s level=%d forced=%s reason=%s",
                               tenant_id, level.level, level.forced, level.reason)
        return self.snapshot

    async def stop(self) -> None:
        """Withdraw this worker's breaker reports."""
        if self._breakers is not None:
            await self.store.forget(self.worker_id, (await self._breakers()).keys())

    async def replay(self, produce: Produce) -> int:
        """Put the kept messages of every tenant no longer in maintenance back on
        ``chat.inbound`` (through ``produce``); returns how many."""
        replayed = 0
        for tenant_id in await self.store.deferred_tenants():
            if self._level_in(self.snapshot, tenant_id).level is Level.MAINTENANCE:
                continue
            if not await self.store.claim_replay(tenant_id, self.worker_id):
                continue  # another worker is at it
            try:
                while records := await self.store.peek(tenant_id, _REPLAY_BATCH):
                    await produce([read_kept_record(r) for r in records])
                    await self.store.drop(tenant_id, len(records))
                    replayed += len(records)
            finally:
                await self.store.end_replay(tenant_id)
            logger.info("degradation.replayed tenant=%s", tenant_id)
        return replayed


def breaker_states(integrations: Callable[[], Iterable[Integrations]],
                   llm: CircuitBreaker | None) -> BreakerStates:
    """This worker's breakers: one per backend of the integrations it holds (each bot
    version has its own; a backend name open in any of them is open), and the LLM's."""

    async def states() -> dict[str, bool]:
        found: dict[str, bool] = {}
        for held in integrations():
            for name, backend in held.backends.items():
                found[name] = found.get(name, False) or (
                    await backend.breaker_state() in _OPEN)
        if llm is not None:
            found[LLM_BACKEND] = llm.state is not BreakerState.CLOSED
        return found

    return states


def register_degradation(ctx: WorkerContext, uses: Iterable[str] | UsesFor,
                         breakers: BreakerStates | None, *, refresh_s: float = 0.5,
                         replay_s: float = 1.0) -> TenantLevels:
    """The worker's :class:`TenantLevels`, refreshed every ``refresh_s`` and replaying kept
    messages every ``replay_s`` (timers of the app; a failure is logged and retried at the
    next tick, the conversations go on at the last known levels)."""
    levels = TenantLevels(DegradationStore(ctx.store.redis),
                          f"{socket.gethostname()}-{os.getpid()}", uses, breakers)
    prefix = ctx.settings.topic_prefix

    async def put_back(records: Sequence[tuple[bytes, bytes]]) -> None:
        await produce(ctx.inbound, records)

    @ctx.app.timer(refresh_s, name=f"{prefix}degradation_refresh", on_leader=False)
    async def refresh() -> None:
        try:
            await levels.refresh()
        except Exception:  # Redis unavailable: the last snapshot stands
            logger.exception("degradation.refresh.failed")

    @ctx.app.timer(replay_s, name=f"{prefix}degradation_replay", on_leader=False)
    async def replay() -> None:
        try:
            await levels.replay(put_back)
        except Exception:  # Redis or the broker unavailable: the next tick goes on
            logger.exception("degradation.replay.failed")

    async def stop() -> None:
        try:
            await levels.stop()
        except Exception:
            logger.warning("degradation.stop.failed", exc_info=True)

    ctx.app.closers.append(stop)
    return levels
