"""HTTP actions on the real stack: the embedded broker, the action agent, and the reference
CRM as its own process (``parley crm``). A request on ``actions.requests`` becomes an HTTP
call and its answer a result on ``actions.results``; the same request twice moves money
once; a failing CRM opens the breaker, which then fails fast, and closes again when the
CRM is back; a CRM that hangs is answered as unavailable within a second."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from confluent_kafka import Producer

from agents.actions import ActionOutcome, ActionRegistry, ActionSettings, FailureKind, read_result
from agents.actions.agent import register_action_agent
from agents.integrations import Integrations, integrations_for
from infra.ports import find_free_ports
from kernel.settings import Settings
from streams.app import create_app
from streams.codecs import AvroCodec
from streams.security import kafka_client_config
from streams.topics import ACTIONS_REQUESTS
from tests.integration.test_actions import Collected, request_value, results  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
ROOT = Path(__file__).resolve().parents[2]
SECRET, ADMIN_SECRET = "test-client-secret", "test-admin-secret"


@dataclass
class Crm:
    url: str
    process: subprocess.Popen[bytes]

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            token = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                auth=("crm-admin", ADMIN_SECRET)).json()["access_token"]
            response = client.request(method, path, headers={
                "Authorization": f"Bearer {token}"}, **kwargs)
            response.raise_for_status()
            return response.json()


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[Crm]:
    port = find_free_ports(1)[0]
    env = {**os.environ, "PARLEY_CRM_CLIENT_SECRET": SECRET,
           "PARLEY_CRM_ADMIN_SECRET": ADMIN_SECRET, "PARLEY_DATA_DIR": str(tmp_path),
           "PARLEY_LOG_JSON": "false"}
    log = (tmp_path / "crm.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "parley", "crm", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (tmp_path / "crm.log").read_text()
        assert time.monotonic() < deadline, "the CRM did not start"
        time.sleep(0.1)
    try:
        yield Crm(url, process)
    finally:
        process.terminate()
        process.wait(10)
        log.close()


class Worker:
    """The action agent running the bot's HTTP actions; ``ask`` sends one request and
    waits for its result."""

    def __init__(self, settings: Settings, collected: Collected) -> None:
        self.settings, self.collected = settings, collected
        self.producer = Producer(kafka_client_config(settings))
        self.codec = AvroCodec("action_result")
        self.n = 0

    def send(self, event: int, action: str, inputs: dict[str, Any]) -> None:
        self.producer.produce(self.settings.topic(ACTIONS_REQUESTS), key=b"conv-1",
                              value=request_value(event, "conv-1", action, inputs))
        assert self.producer.flush(10) == 0

    async def result(self, event: int, timeout_s: float = 30) -> tuple[ActionOutcome, float]:
        """The outcome of the request of ``event``, and when it arrived (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for at, msg in list(self.collected.records):
                in_reply_to, outcome = read_result(self.codec.decode(msg.value()))
                if in_reply_to == f"e{event}.c":
                    return outcome, at
            assert time.monotonic() < deadline, f"no result for e{event}"
            await asyncio.sleep(0.02)

    async def ask(self, action: str, inputs: dict[str, Any]) -> tuple[ActionOutcome, float]:
        """One request; its outcome and the seconds from sending to the result."""
        self.n += 1
        began = time.monotonic()
        self.send(self.n, action, inputs)
        outcome, at = await self.result(self.n)
        return outcome, at - began


def bot_folder(tmp_path: Path, breaker: str) -> Path:
    """The demo bot's folder with another breaker (a test cannot wait 10 s to recover)."""
    folder = tmp_path / "bot"
    shutil.copytree(DEMO, folder)
    config = folder / "integrations.yml"
    text = config.read_text()
    assert "breaker: {failures: 5, reset_s: 10}" in text
    config.write_text(text.replace("breaker: {failures: 5, reset_s: 10}", breaker))
    return folder


@pytest_asyncio.fixture
async def worker(settings: Settings, tmp_path: Path, crm: Crm,
                 results: Collected) -> AsyncIterator[Worker]:  # noqa: F811
    integrations = integrations_for(
        bot_folder(tmp_path, "breaker: {failures: 3, reset_s: 1}"),
        {"CRM_URL": crm.url, "CRM_CLIENT_SECRET": SECRET})
    assert isinstance(integrations, Integrations)
    registry = ActionRegistry()
    integrations.register(registry)
    ctx = create_app(settings.replace(worker_web_port=find_free_ports(1)[0], data_dir=tmp_path))
    register_action_agent(ctx, registry, ActionSettings(timeout_s=10.0, concurrency=4))
    await ctx.app.start()
    try:
        yield Worker(settings, results)
    finally:
        await ctx.app.stop()
        await integrations.aclose()


async def test_an_action_request_becomes_an_http_call_and_its_answer_a_result(
        worker: Worker, crm: Crm) -> None:
    order, _ = await worker.ask("order_status", {"order_id": "12345"})
    assert order.ok, order
    assert order.outputs == {"order_status": "shipped", "carrier": "DHL",
                             "estimated_delivery": "2026-12-09"}
    balance, _ = await worker.ask("account_balance", {})
    assert balance.ok and balance.outputs["current_balance"] == {"value": 2450.75,
                                                                 "currency": "EUR"}
    blocked, _ = await worker.ask("block_card", {"card_type": "credit"})
    assert blocked.ok and blocked.outputs == {"blocked_card": "9034"}
    missing, _ = await worker.ask("order_status", {"order_id": "424242"})
    assert (missing.kind, missing.error) == (FailureKind.FAILED, "no such order")


async def test_the_same_request_twice_moves_money_once(worker: Worker, crm: Crm) -> None:
    inputs = {"amount": {"value": 50, "currency": "EUR"}, "recipient": "Anna"}
    worker.send(100, "send_money", inputs)
    worker.send(100, "send_money", inputs)  # redelivered: the same event id, the same key
    first, _ = await worker.result(100)
    await asyncio.sleep(1.0)
    answers = [r for r in worker.collected.records]
    assert len(answers) == 2, "both deliveries are answered"
    assert first.ok and first.outputs["new_balance"] == {"value": 2400.75, "currency": "EUR"}
    assert crm.admin("GET", "/admin/counts")["transfers"] == 1
    balance, _ = await worker.ask("account_balance", {})
    assert balance.outputs["current_balance"]["value"] == 2400.75


async def test_a_failing_crm_opens_the_breaker_which_fails_fast_then_recovers(
        worker: Worker, crm: Crm) -> None:
    ok, _ = await worker.ask("order_status", {"order_id": "12345"})
    assert ok.ok
    crm.admin("PUT", "/admin/faults", json={"error_rate": 1.0})
    failed = [await worker.ask("order_status", {"order_id": "12345"}) for _ in range(2)]
    assert all(o.kind is FailureKind.UNAVAILABLE for o, _ in failed), failed
    assert "503" in (failed[0][0].error or "")
    # 2 requests x 2 attempts (GET is retried): the third failure opened the circuit
    fast, _ = await worker.ask("order_status", {"order_id": "12345"})
    assert fast.kind is FailureKind.UNAVAILABLE and "circuit open" in (fast.error or "")
    assert fast.duration_ms < 50
    crm.admin("DELETE", "/admin/faults")
    still_open, _ = await worker.ask("order_status", {"order_id": "12345"})
    assert "circuit open" in (still_open.error or "")  # before reset_s, nothing is tried
    await asyncio.sleep(1.1)
    recovered, _ = await worker.ask("order_status", {"order_id": "12345"})
    assert recovered.ok, recovered


async def test_a_hanging_crm_is_answered_as_unavailable_within_a_second(
        worker: Worker, crm: Crm) -> None:
    crm.admin("PUT", "/admin/faults", json={"hang": True})
    try:
        outcome, seconds = await worker.ask("order_status", {"order_id": "12345"})
    finally:
        crm.admin("DELETE", "/admin/faults")
    # unavailable (both attempts timed out) or timeout (the action's 0.8 s deadline came
    # first): flows answer both with on_unavailable
    assert outcome.kind in (FailureKind.UNAVAILABLE, FailureKind.TIMEOUT), outcome
    assert outcome.duration_ms <= 900 and seconds < 1.5, (outcome, seconds)
