"""Degradation levels on the real stack (gateway → Kafka → worker → Redis, and the real
reference CRM): the level follows the CRM's breaker by itself, an operator forces
maintenance with ``parley degrade``, and the user is told either way.

docs/operations.md, "Degradation levels".
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from agents.dialogue.degradation import MAINTENANCE_REPLY, NOTICES
from parley.cli import main
from parley.stack import ChildProcess
from streams.degradation import Level
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, start_pipeline
from tests.e2e.test_dialogue import _crm_faults

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]

TENANT = "e2e"  # ChatClient's
ORDER = "where is my order 12345"


@pytest.fixture(scope="module")
def stack(infra: Any, tmp_path_factory: pytest.TempPathFactory, demo_model: Path,
          demo_index: Path) -> Iterator[Pipeline]:
    settings = make_settings(infra, tmp_path_factory.mktemp("degrade"), demo_model)
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


def _worker(pipeline: Pipeline) -> ChildProcess:
    return next(c for c in pipeline.stack.children if c.name.startswith("worker"))


async def _level_in_metrics(pipeline: Pipeline) -> float | None:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(_worker(pipeline).url + "metrics")).text
    pattern = r'^parley_degradation_level\{tenant="' + TENANT + r'"\} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def _wait_for_level(pipeline: Pipeline, level: Level, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await _level_in_metrics(pipeline)
        if seen == int(level):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"parley_degradation_level{{tenant={TENANT}}} is {seen}, not {level}")


async def _turn(chat: ChatClient, text: str) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    await chat.send(text)
    await chat.next("ack", 30)
    reply = await chat.next("reply", 30)
    return reply, time.monotonic() - began


async def _parley(pipeline: Pipeline, *args: str) -> str:
    """``parley *args`` as an operator (the stack's credentials); it runs its own event
    loop, so on a thread of its own."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args),
                                     env=pipeline.stack.settings.to_env())
    assert result.exit_code == 0, result.output
    return result.output


async def test_the_crm_failing_reduces_the_level_and_its_recovery_restores_it(
        stack: Pipeline) -> None:
    async with ChatClient(stack.url) as chat:
        assert chat.welcome["degradation_level"] == int(Level.FULL)
        warm, _ = await _turn(chat, ORDER)  # the token, the connections
        assert warm["response"] == "utter_order_status", warm
        await _wait_for_level(stack, Level.FULL)

        await _crm_faults(stack, {"down": True})
        degraded: list[dict[str, Any]] = []
        try:
            for _ in range(3):  # two attempts each (a GET is retried): the breaker opens
                reply, took = await _turn(chat, ORDER)
                degraded.append(reply)
                assert took < 1.0, f"the reply took {took:.2f} s"
            await _wait_for_level(stack, Level.REDUCED)
            for _ in range(2):  # the breaker is open: nothing is sent to the CRM
                reply, took = await _turn(chat, ORDER)
                degraded.append(reply)
                assert took < 1.0, f"the reply took {took:.2f} s"
        finally:
            await _crm_faults(stack, None)
        for reply in degraded:
            assert reply["response"] == "utter_crm_unavailable", reply
            assert "can't reach your account" in reply["text"]
            assert "Talk to a human" in reply["quick_replies"]  # the offer of a person
        told = [r for r in degraded if NOTICES[Level.REDUCED] in r["text"]]
        assert len(told) == 1, degraded  # said once, when the level changed
        assert NOTICES[Level.REDUCED] not in degraded[-1]["text"]

        # the breaker tries again after reset_s (10 s in the demo): the CRM answers
        deadline = time.monotonic() + 40
        while True:
            reply, _ = await _turn(chat, ORDER)
            if reply["response"] == "utter_order_status":
                break
            assert time.monotonic() < deadline, f"no recovery: {reply}"
            await asyncio.sleep(1)
        await _wait_for_level(stack, Level.FULL)
        back, _ = await _turn(chat, ORDER)
        assert back["response"] == "utter_order_status", back
        assert NOTICES[Level.FULL] in back["text"]


async def test_forced_maintenance_keeps_a_message_and_answers_it_afterwards(
        stack: Pipeline) -> None:
    out = await _parley(stack, "degrade", "--tenant", TENANT, "--level", "4",
                        "--reason", "drill")
    assert "level 4" in out
    async with ChatClient(stack.url) as chat:
        try:
            await _wait_for_level(stack, Level.MAINTENANCE)
            assert "forced (drill)" in await _parley(stack, "degrade", "--tenant", TENANT)
            async with ChatClient(stack.url) as later:  # a socket opened now is told too
                assert later.welcome["degradation_level"] == int(Level.MAINTENANCE)
            kept, _ = await _turn(chat, ORDER)  # acknowledged (ack frame), and told
            assert MAINTENANCE_REPLY in kept["text"], kept
            assert NOTICES[Level.MAINTENANCE] in kept["text"]
            with pytest.raises(TimeoutError):  # kept, not answered meanwhile
                await chat.next("reply", 3)
        finally:
            await _parley(stack, "degrade", "--tenant", TENANT, "--auto")
        await _wait_for_level(stack, Level.FULL)
        answered = await chat.next("reply", 20)  # the kept message, answered now
    assert answered["response"] == "utter_order_status", answered
    assert "12345" in answered["text"], answered
    assert NOTICES[Level.FULL] in answered["text"]


async def test_only_an_operator_with_the_infrastructure_credentials_can_force_a_level(
        stack: Pipeline) -> None:
    env = {**stack.stack.settings.to_env(), "PARLEY_REDIS_USERNAME": "intruder",
           "PARLEY_REDIS_PASSWORD": "guess"}
    result = await asyncio.to_thread(CliRunner().invoke, main,
                                     ["degrade", "--tenant", TENANT, "--level", "4"], env=env)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert await _level_in_metrics(stack) != int(Level.MAINTENANCE)
