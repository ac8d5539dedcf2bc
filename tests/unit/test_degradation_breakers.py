"""What a worker reports of its breakers (agents/degradation.py ``breaker_states``): every
bot version it holds has its own integrations and breakers; a backend name open in any
of them is reported open, and the LLM's breaker as ``llm``."""

from __future__ import annotations

from typing import Any

import pytest

from agents.degradation import LLM_BACKEND, breaker_states
from agents.knowledge.breaker import CircuitBreaker

pytestmark = pytest.mark.asyncio


class Backend:
    def __init__(self, state: str) -> None:
        self.state = state

    async def breaker_state(self) -> str:
        return self.state


class Held:
    """An Integrations stand-in: its backends by name."""

    def __init__(self, **states: str) -> None:
        self.backends = {name: Backend(state) for name, state in states.items()}


async def test_a_backend_open_in_any_version_is_reported_open() -> None:
    held: list[Any] = [Held(crm="closed", billing="closed"), Held(crm="opened")]
    states = breaker_states(lambda: held, None)
    assert await states() == {"crm": True, "billing": False}
    held.append(Held(tickets="half-opened"))  # a version installed since
    assert await states() == {"crm": True, "billing": False, "tickets": True}
    held[:] = [Held(crm="closed")]  # the versions with open breakers are gone
    assert await states() == {"crm": False}


async def test_the_llms_breaker_is_reported_with_them() -> None:
    llm = CircuitBreaker()
    assert await breaker_states(lambda: [], llm)() == {LLM_BACKEND: False}
