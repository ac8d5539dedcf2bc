"""Workers come and go mid-stream without losing or repeating an acknowledged message.

A worker is killed (SIGKILL) and restarted; a second worker joins and the first
leaves (two consumer-group rebalances); the worker is restarted on another NLU
model folder. Every time, every acknowledged message is answered exactly once,
and each conversation's replies stay gap-free and ordered.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.nlu.data import load_examples
from agents.nlu.model import NLUModel
from agents.nlu.train import TrainingParams, train_model
from examples import DEMO
from streams.codecs import codec_for
from streams.topics import CHAT_OUTBOUND, CHAT_UNDERSTOOD
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, read_topic, start_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]


@pytest.fixture
def own_pipeline(infra: Any, tmp_path: Path, demo_model: Path,
                 demo_index: Path) -> Iterator[Pipeline]:
    settings = make_settings(infra, tmp_path, demo_model)
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


class Conversations:
    """Chat clients that talk steadily and record what was acked, answered and left
    unconfirmed (the broker did not confirm it in time: it may or may not be answered)."""

    def __init__(self, url: str, count: int = 8) -> None:
        self.clients = [ChatClient(url) for _ in range(count)]
        self.acked: dict[str, set[str]] = defaultdict(set)
        self.unconfirmed: dict[str, set[str]] = defaultdict(set)
        self.got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Conversations:
        for chat in self.clients:
            await chat.__aenter__()
            self._tasks += [asyncio.create_task(self._acks(chat)),
                            asyncio.create_task(self._replies(chat)),
                            asyncio.create_task(self._errors(chat))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for chat in self.clients:
            await chat.__aexit__(None, None, None)

    async def _acks(self, chat: ChatClient) -> None:
        while True:
            self.acked[chat.conversation].add((await chat.frames["ack"].get())["client_msg_id"])

    async def _errors(self, chat: ChatClient) -> None:
        while True:
            error = await chat.frames["error"].get()
            if error["code"] == "unconfirmed":
                self.unconfirmed[chat.conversation].add(error["client_msg_id"])

    async def _replies(self, chat: ChatClient) -> None:
        while True:
            self.got[chat.conversation].append(await chat.frames["reply"].get())

    def talk(self, seconds: float) -> asyncio.Future[Any]:
        """Every client sends a message every 50 ms for ``seconds``."""
        async def one(chat: ChatClient) -> None:
            end, i = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                await chat.send(f"tell me about my card {i}")
                i += 1
                await asyncio.sleep(0.05)

        return asyncio.gather(*(one(chat) for chat in self.clients))

    @property
    def total_acked(self) -> int:
        return sum(len(ids) for ids in self.acked.values())

    async def wait_answered(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while (sum(len(r) for r in self.got.values()) < self.total_acked
               and time.monotonic() < deadline):
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # anything duplicated would arrive now

    @property
    def answered_ids(self) -> set[str]:
        return {r["in_reply_to"] for replies in self.got.values() for r in replies}

    def assert_answered_exactly_once(self) -> None:
        assert self.total_acked > 100
        for conversation, ids in self.acked.items():
            answered = [r["in_reply_to"] for r in self.got[conversation]]
            assert ids <= set(answered), "every acknowledged message is answered"
            assert set(answered) <= ids | self.unconfirmed[conversation], \
                "only acknowledged (or unconfirmed) messages are answered"
            assert len(answered) == len(set(answered)), "no message is answered twice"
            seqs = [r["seq"] for r in self.got[conversation]]
            assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))


def assert_topic_repeats_are_resends(pipeline: Pipeline, chats: Conversations) -> None:
    """On the topic, a reply for one inbound event is either unique or an exact re-send
    (same event_id and seq: a worker died between producing and recording it).

    Only these conversations' replies count: the topic may also hold the expiry notice of
    another test's handoff request (tenant ``e2e``), which this pipeline's worker took
    from the tenant's queue in the Redis Cluster every e2e test shares.
    """
    codec = codec_for("bot_reply")
    ours = {chat.conversation for chat in chats.clients}
    by_inbound: dict[str, set[tuple[str, int, str]]] = defaultdict(set)
    unasked = []
    for m in read_topic(pipeline.settings, CHAT_OUTBOUND):
        r = codec.decode(m.value())
        if r["conversation_id"] not in ours:
            continue
        payload = r["payload"]
        if not payload["client_msg_id"]:
            unasked.append(r)
        by_inbound[payload["client_msg_id"]].add((r["event_id"], r["seq"], payload["text"]))
    assert not unasked, f"replies to no user message: {unasked}"
    assert set(by_inbound) == chats.answered_ids
    assert all(len(versions) == 1 for versions in by_inbound.values())


async def test_worker_killed_mid_stream(own_pipeline: Pipeline) -> None:
    stack = own_pipeline.stack
    async with Conversations(own_pipeline.url) as chats:
        talking = chats.talk(4)
        await asyncio.sleep(2)
        worker = next(c for c in stack.children if c.name.startswith("worker"))
        # SIGKILL while events flow: what it processed since its last commit (every 0.5 s)
        # is not committed. Messages sent from now on are still acked: the broker holds them.
        worker.kill()
        await talking
        restarted = stack.start_worker(name="worker-restarted")
        await asyncio.to_thread(stack.wait_ready, [restarted], 90)
        await chats.wait_answered()

    chats.assert_answered_exactly_once()
    assert_topic_repeats_are_resends(own_pipeline, chats)
    # The crash really left processed-but-uncommitted events for the new worker.
    assert "dialogue.events.reprocessed" in restarted.log_path.read_text()


async def test_workers_join_and_leave_mid_stream(own_pipeline: Pipeline) -> None:
    stack = own_pipeline.stack
    first = next(c for c in stack.children if c.name.startswith("worker"))
    async with Conversations(own_pipeline.url) as chats:
        talking = chats.talk(12)
        await asyncio.sleep(1.5)
        second = stack.start_worker(name="worker-second")  # rebalance: partitions split
        await asyncio.to_thread(stack.wait_ready, [second], 90)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(first.stop)  # graceful leave: the second takes all
        await talking
        await chats.wait_answered()

    chats.assert_answered_exactly_once()
    assert_topic_repeats_are_resends(own_pipeline, chats)
    # Both workers really served: the second took partitions while the first ran.
    log = second.log_path.read_text()
    assert "conversation" in log and first.popen.returncode == 0


async def test_nlu_model_swapped_by_restarting_the_worker(own_pipeline: Pipeline,
                                                         tmp_path: Path) -> None:
    stack = own_pipeline.stack
    old = next(c for c in stack.children if c.name.startswith("worker"))
    old_version = NLUModel.load(Path(stack.settings.nlu_model_dir)).version
    # The demo data again, trained with another C and a context encoder that every
    # message consults: the worker then runs the model off its event loop.
    new_model = tmp_path / "model-b"
    params = TrainingParams(c=0.5, context_encoder="minilm", context_route_below=1.0)
    train_model(load_examples([DEMO.nlu]), new_model, params)
    assert NLUModel.load(new_model).has_context_encoder
    new_version = NLUModel.load(new_model).version
    assert new_version != old_version

    async with Conversations(own_pipeline.url) as chats:
        talking = chats.talk(8)
        await asyncio.sleep(2)
        await asyncio.to_thread(old.stop)  # messages keep being acked: the broker holds them
        stack.settings = stack.settings.replace(nlu_model_dir=str(new_model))
        stack.model_dir = new_model
        restarted = stack.start_worker(name="worker-new-model")
        await asyncio.to_thread(stack.wait_ready, [restarted], 90)
        await talking
        await chats.wait_answered()

    chats.assert_answered_exactly_once()
    assert_topic_repeats_are_resends(own_pipeline, chats)
    # Every message was understood by one model or the other, and within each
    # conversation the new model took over for good: no old-model message after it.
    codec = codec_for("chat_understood")
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for m in read_topic(own_pipeline.settings, CHAT_UNDERSTOOD):
        u = codec.decode(m.value())
        seqs[(u["conversation_id"], u["payload"]["model_version"])].append(u["seq"])
    assert {version for _, version in seqs} == {old_version, new_version}
    for chat in chats.clients:
        before = seqs[(chat.conversation, old_version)]
        after = seqs[(chat.conversation, new_version)]
        assert before and after
        assert max(before) <= min(after)
