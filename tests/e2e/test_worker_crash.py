"""Killing and restarting the worker loses no acknowledged message and duplicates no reply."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.codecs import codec_for
from streams.topics import CHAT_OUTBOUND
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, read_topic, start_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]


@pytest.fixture
def own_pipeline(infra: Any, tmp_path: Path, demo_model: Path,
                 demo_index: Path) -> Iterator[Pipeline]:
    settings = make_settings(infra.kafka_bootstrap, infra.redis_nodes, tmp_path, demo_model)
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


def outbound_replies(pipeline: Pipeline) -> list[dict[str, Any]]:
    codec = codec_for("bot_reply")
    return [codec.decode(m.value()) for m in read_topic(pipeline.settings, CHAT_OUTBOUND)]


async def test_worker_killed_mid_stream(own_pipeline: Pipeline) -> None:
    stack = own_pipeline.stack
    acked: dict[str, set[str]] = defaultdict(set)
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    clients = [ChatClient(own_pipeline.url) for _ in range(8)]
    for c in clients:
        await c.__aenter__()

    async def talk(chat: ChatClient, seconds: float) -> None:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            await chat.send(f"tell me about my card {i}")
            i += 1
            await asyncio.sleep(0.05)

    async def drain(chat: ChatClient) -> None:
        while True:
            frame = await chat.frames["ack"].get()
            acked[chat.conversation].add(frame["client_msg_id"])

    async def replies(chat: ChatClient) -> None:
        while True:
            got[chat.conversation].append(await chat.frames["reply"].get())

    background = [asyncio.create_task(f(c)) for c in clients for f in (drain, replies)]
    try:
        await crash_and_recover(stack, clients, talk, acked, got)
    finally:
        for task in background:
            task.cancel()
        for c in clients:
            await c.__aexit__(None, None, None)

    total_acked = sum(len(v) for v in acked.values())
    assert total_acked > 100
    for conversation, ids in acked.items():
        answered = [r["in_reply_to"] for r in got[conversation]]
        assert set(answered) == ids, "every acknowledged message is answered"
        assert len(answered) == len(set(answered)), "no message is answered twice"
        seqs = [r["seq"] for r in got[conversation]]
        assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))

    # On the topic, a reply for one inbound event is either unique or an exact re-send
    # (same event_id and seq: a worker died between producing and recording it).
    by_inbound: dict[str, set[tuple[str, int, str]]] = defaultdict(set)
    for r in outbound_replies(own_pipeline):
        by_inbound[r["payload"]["in_reply_to"]].add((r["event_id"], r["seq"], r["payload"]["text"]))
    assert len(by_inbound) == total_acked
    assert all(len(versions) == 1 for versions in by_inbound.values())

    # The crash really left processed-but-uncommitted events for the new worker.
    restarted = next(c for c in own_pipeline.stack.children if c.name == "worker-restarted")
    assert "dialogue.events.reprocessed" in restarted.log_path.read_text()


async def crash_and_recover(
    stack: Any, clients: list[ChatClient], talk: Any,
    acked: dict[str, set[str]], got: dict[str, list[dict[str, Any]]],
) -> None:
    """Talk, SIGKILL the worker mid-stream, keep talking, restart it, wait for the replies."""
    talking = asyncio.gather(*(talk(c, 4) for c in clients))
    await asyncio.sleep(2)
    worker = next(c for c in stack.children if c.name.startswith("worker"))
    # SIGKILL while events flow: what it processed since its last commit (every 0.5 s)
    # is not committed. Messages sent from now on are still acked: the broker holds them.
    worker.kill()
    await talking
    restarted = stack.start_worker(name="worker-restarted")
    await asyncio.to_thread(stack.wait_ready, [restarted], 90)

    total_acked = sum(len(v) for v in acked.values())
    deadline = time.monotonic() + 60
    while sum(len(v) for v in got.values()) < total_acked and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # anything duplicated would arrive now
