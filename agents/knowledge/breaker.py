"""A circuit breaker for calls to a remote dependency (the LLM endpoint), on purgatory.

::

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(reset_timeout elapsed, next call)──▶ half-open (one trial call at a time)
    half-open ──success──▶ closed        half-open ──failure──▶ open (timer restarts)

The states and their transitions are purgatory's (``purgatory.domain.model.Context``),
the library the integrations' per-backend breakers use (agents/integrations/backend.py,
which says why that one). The LLM call is not one ``async with`` block, though: a 4xx
answer is a success for the breaker but still an error for the caller, and a cancelled
call is neither (it changes no state, and a half-open circuit's next call becomes its
trial). So this class drives purgatory's state machine through four calls,
:meth:`before_call` and one of :meth:`record_success`, :meth:`record_failure` or
:meth:`record_cancelled`, and adds what purgatory leaves to its caller: one trial call
at a time while half-open.

While open, :meth:`CircuitBreaker.before_call` raises
:class:`~agents.knowledge.errors.CircuitOpenError` at once, so a dead endpoint costs
nothing and callers fall back immediately. Time is purgatory's (``time.time`` read in
``purgatory.domain.model``), which tests replace to move through the reset timeout
without sleeping.
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum

from purgatory.domain import model as purgatory_model
from purgatory.domain.model import Context, OpenedState

from agents.knowledge.errors import CircuitOpenError, LLMError

__all__ = ["BreakerState", "CircuitBreaker"]

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


_STATES = {purgatory_model.CLOSED: BreakerState.CLOSED,
           purgatory_model.OPENED: BreakerState.OPEN,
           purgatory_model.HALF_OPENED: BreakerState.HALF_OPEN}


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int = 3, reset_timeout_s: float = 30.0,
                 name: str = "llm") -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_s <= 0:
            raise ValueError("reset_timeout_s must be positive")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._context = Context(name, failure_threshold, reset_timeout_s)
        self._lock = threading.Lock()
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state as the next call would see it (open turns half-open on its own)."""
        with self._lock:
            state = _STATES[self._context.state]
            if state is BreakerState.OPEN and self._reset_due():
                return BreakerState.HALF_OPEN
            return state

    @property
    def failures(self) -> int:
        return self._context.failure_count or 0

    def _reset_due(self) -> bool:
        opened_at = self._context.opened_at or 0.0
        return purgatory_model.time.time() > opened_at + self.reset_timeout_s

    def _settle(self) -> None:
        """Log purgatory's state changes (it queues them as messages for a bus)."""
        for message in self._context.messages:
            if isinstance(message, purgatory_model.ContextChanged):
                logger.log(logging.WARNING if message.state == purgatory_model.OPENED
                           else logging.INFO, "breaker.%s name=%s failures=%d",
                           _STATES[message.state].value.replace("-", "_"), self.name,
                           self.failures)
        self._context.messages.clear()

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError`."""
        with self._lock:
            try:
                self._context.handle_new_request()  # open past its timeout: half-open
            except OpenedState as exc:
                retry_in = (self._context.opened_at or 0.0) + self.reset_timeout_s \
                    - purgatory_model.time.time()
                raise CircuitOpenError(f"{self.name} circuit open, next trial in "
                                       f"{max(retry_in, 0.0):.1f}s") from exc
            finally:
                self._settle()
            if self._context.state == purgatory_model.HALF_OPENED:
                if self._trial_in_flight:
                    raise CircuitOpenError(f"{self.name} circuit half-open, a trial call is "
                                           f"running")
                self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            if self._context.state != purgatory_model.OPENED:
                self._context.handle_end_request()
            self._settle()

    def record_cancelled(self) -> None:
        """A call that ended without an outcome: nothing learnt about the dependency."""
        with self._lock:
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            if self._context.state != purgatory_model.OPENED:
                # purgatory's state machine counts an exception; this one is never raised
                self._context.handle_exception(LLMError("a failed call"))
            self._settle()
