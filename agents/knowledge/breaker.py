"""A circuit breaker for calls to a remote dependency (the LLM endpoint).

::

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(reset_timeout elapsed, next call)──▶ half-open (one trial call at a time)
    half-open ──success──▶ closed        half-open ──failure──▶ open (timer restarts)

A cancelled call is neither: it changes no state, and a half-open circuit's
next call becomes its trial.

While open, :meth:`CircuitBreaker.before_call` raises
:class:`~agents.knowledge.errors.CircuitOpenError` at once, so a dead endpoint
costs nothing and callers fall back immediately. The clock is injected, which
makes every transition testable without sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from agents.knowledge.errors import CircuitOpenError

__all__ = ["BreakerState", "CircuitBreaker"]

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int = 3, reset_timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, name: str = "llm") -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_s <= 0:
            raise ValueError("reset_timeout_s must be positive")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state as the next call would see it (open turns half-open on its own)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._reset_due():
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def _reset_due(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout_s

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError`."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return
            if self._state is BreakerState.OPEN:
                if not self._reset_due():
                    retry_in = self.reset_timeout_s - (self._clock() - self._opened_at)
                    raise CircuitOpenError(f"{self.name} circuit open, next trial in "
                                           f"{retry_in:.1f}s")
                self._state = BreakerState.HALF_OPEN
                self._trial_in_flight = False
                logger.info("breaker.half_open name=%s", self.name)
            if self._trial_in_flight:
                raise CircuitOpenError(f"{self.name} circuit half-open, a trial call is running")
            self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            if self._state is not BreakerState.CLOSED:
                logger.info("breaker.closed name=%s", self.name)
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_in_flight = False

    def record_cancelled(self) -> None:
        """A call that ended without an outcome: nothing learnt about the dependency."""
        with self._lock:
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                if self._state is not BreakerState.OPEN:
                    logger.warning("breaker.opened name=%s failures=%d", self.name,
                                   self._failures)
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
