"""Redis or the broker stops answering for a while (SIGSTOP): the gateway refuses what it
cannot take, no acknowledged message is lost, and every connection carries on afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.embedded import EmbeddedInfra
from tests.conftest import _start_embedded
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, start_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]

#: Longer than the socket timeouts of the gateway's (1 s) and the worker's (5 s) Redis
#: clients, and than the broker session timeout of the workers (6 s). The broker's, with
#: room, than the gateway producer's delivery.timeout.ms (10 s): its first refusals come
#: 9.9-10.3 s in, and with 10 s of outage after the 1.5 s of talking it thawed 11.5 s in.
OUTAGE_S = {"redis": 10.0, "broker": 14.0}
#: What a message sent during an outage may get instead of its ack: ``unavailable`` or
#: ``unconfirmed`` when its dependency failed it, ``overloaded`` when the gateway's
#: in-flight limit (500) filled with messages the frozen broker had not confirmed.
REFUSALS = {"unavailable", "unconfirmed", "overloaded"}
#: How soon the gateway refuses a message it cannot take: its Redis client gives up after
#: 1 s; its producer reports a message undelivered after delivery.timeout.ms (10 s).
REFUSED_WITHIN_S = {"redis": 3.0, "broker": 13.0}


@pytest.fixture
def own_infra(tmp_path: Path) -> Iterator[EmbeddedInfra]:
    """A broker and Redis Cluster of this test's own: it freezes the Redis nodes."""
    infra = _start_embedded(tmp_path / "infra")
    yield infra
    infra.stop()


@pytest.fixture
def stack_on_own_infra(own_infra: EmbeddedInfra, tmp_path: Path, demo_model: Path,
                       demo_index: Path) -> Iterator[Pipeline]:
    settings = make_settings(own_infra, tmp_path, demo_model)
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("dependency", ["redis", "broker"])
async def test_nothing_acknowledged_is_lost_while_a_dependency_is_down(
        own_infra: EmbeddedInfra, stack_on_own_infra: Pipeline, dependency: str) -> None:
    is_broker = {"redis": False, "broker": True}[dependency]
    pids = [s.pid for s in own_infra.services
            if s.name.startswith("kafka-") == is_broker and s.pid is not None]
    assert len(pids) == (1 if is_broker else 6)
    acked: dict[str, set[str]] = defaultdict(set)
    answered: dict[str, list[str]] = defaultdict(list)
    clients = [ChatClient(stack_on_own_infra.url) for _ in range(6)]
    for chat in clients:
        await chat.__aenter__()

    async def talk(chat: ChatClient, until: float) -> None:
        i = 0
        while time.monotonic() < until:
            await chat.send(f"what is my balance {i}")
            i += 1
            await asyncio.sleep(0.02)

    async def record(chat: ChatClient, kind: str, into: dict[str, Any]) -> None:
        while True:
            frame = await chat.frames[kind].get()
            if kind == "ack":
                into[chat.conversation].add(frame["client_msg_id"])
            else:
                into[chat.conversation].append(frame["in_reply_to"])

    refused: dict[str, float] = {}  # client_msg_id -> when
    failed_at: list[float] = []  # when a message was refused for the dependency down
    codes: Counter[str] = Counter()

    async def record_errors(chat: ChatClient) -> None:
        # Checked after the outage, not here: an assertion would end this task unseen.
        while True:
            frame = await chat.frames["error"].get()
            codes[frame["code"]] += 1
            refused[frame["client_msg_id"]] = time.monotonic()
            # unconfirmed: the producer gave up waiting; the broker may still hold it.
            if frame["code"] in {"unavailable", "unconfirmed"}:
                failed_at.append(time.monotonic())

    async def until_acked(chat: ChatClient, text: str) -> str:
        """Send like a client that retries a message the gateway refused."""
        for _ in range(20):
            msg = await chat.send(text)
            while msg not in acked[chat.conversation] and msg not in refused:
                await asyncio.sleep(0.02)
            if msg in acked[chat.conversation]:
                return msg
            await asyncio.sleep(0.5)
        raise AssertionError(f"{chat.conversation}: {text!r} refused 20 times")

    background = [asyncio.create_task(record(c, kind, into)) for c in clients
                  for kind, into in (("ack", acked), ("reply", answered))]
    background += [asyncio.create_task(record_errors(c)) for c in clients]
    try:
        # Messages are in every stage of the pipeline when Redis stops answering.
        talking = [asyncio.create_task(talk(c, time.monotonic() + 2.0)) for c in clients]
        await asyncio.sleep(0.5)
        with frozen(pids):
            frozen_at = time.monotonic()
            await asyncio.gather(*talking)
            await asyncio.sleep(OUTAGE_S[dependency])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                set(answered[c]) != ids for c, ids in acked.items()):
            await asyncio.sleep(0.2)
        # Every connection is still usable (the first try may still be refused).
        after = await asyncio.wait_for(
            asyncio.gather(*(until_acked(chat, "hello again") for chat in clients)), 60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                m in answered[c.conversation] for m, c in zip(after, clients, strict=True)):
            await asyncio.sleep(0.2)
    finally:
        for task in background:
            task.cancel()
        for chat in clients:
            await chat.__aexit__(None, None, None)

    assert sum(len(ids) for ids in acked.values()) > 50
    for conversation, ids in acked.items():
        assert set(answered[conversation]) >= ids, "every acknowledged message is answered"
        assert len(answered[conversation]) == len(set(answered[conversation]))
    assert all(m in answered[c.conversation] for m, c in zip(after, clients, strict=True)), \
        "every connection works after the outage"
    # The gateway refused what it could not take, soon after the outage began.
    assert set(codes) <= REFUSALS, codes
    assert failed_at and min(failed_at) - frozen_at < REFUSED_WITHIN_S[dependency], codes
