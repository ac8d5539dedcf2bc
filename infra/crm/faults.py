"""Failing on purpose: the CRM's fault injection, for tests and drills.

An operator (the admin credential, ``PUT /admin/faults``) sets what every API call
suffers until it is cleared:

* ``latency_ms``: added before the call is handled (the call is in flight, nothing done);
* ``reply_latency_ms``: added after the call was handled, before its answer is sent (the
  effect is done and committed, its client is still waiting: a write whose caller may
  give up or die before it learns the outcome, which its idempotency key must survive);
* ``error_rate``: the share of calls (0 to 1) answered ``503`` without being handled;
* ``hang``: calls are held without an answer (a backend that accepted the connection
  and never replied), until the fault is cleared or ``hang_max_s`` passed;
* ``down``: calls are answered ``503 {"detail": "down"}`` at once (a maintenance page
  in front of a dead backend; kill the process for a refused connection).

``/healthz``, ``/oauth/token`` and ``/admin/*`` are never affected, so a drill can
always be ended and a client can always authenticate. ``GET /admin/faults`` also says how
many API calls are ``in_flight`` (received, not yet answered), so a drill or a test can act
while a call is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["FaultPlan", "Faults", "Verdict"]


class FaultPlan(BaseModel):
    """What the admin endpoint takes (every field optional: the rest are cleared)."""

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    reply_latency_ms: int = Field(default=0, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    hang: bool = False
    hang_max_s: float = Field(default=300.0, gt=0, le=3600)
    down: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one call: answer ``status`` at once (0: handle it)."""

    status: int = 0
    detail: str = ""


@dataclass
class Faults:
    latency_ms: int = 0
    reply_latency_ms: int = 0
    error_rate: float = 0.0
    hang: bool = False
    hang_max_s: float = 300.0
    down: bool = False
    #: API calls received and not yet answered (kept by :meth:`holding`, never set).
    in_flight: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def set(self, plan: FaultPlan) -> None:
        for name, value in plan.model_dump().items():
            setattr(self, name, value)
        if self.hang:
            self._released.clear()
        else:
            self._released.set()  # held calls end now

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not f.name.startswith("_")}

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """Count one API call in :attr:`in_flight` while it is being handled."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def apply(self, rng: random.Random) -> Verdict:
        """Wait as the faults say, then tell whether to answer the call or refuse it."""
        if self.down:
            return Verdict(503, "down")
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.hang_max_s)
            return Verdict(504, "hung")
        if self.error_rate and rng.random() < self.error_rate:
            return Verdict(503, "injected failure")
        return Verdict()

    async def before_reply(self) -> None:
        """Hold a handled call's answer as ``reply_latency_ms`` says."""
        if self.reply_latency_ms:
            await asyncio.sleep(self.reply_latency_ms / 1000)
