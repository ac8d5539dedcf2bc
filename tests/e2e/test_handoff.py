"""Human handoff through the whole pipeline: a user asks for a person, an agent takes the
conversation over through the console's API (gateway/handoff_desk.py), they talk while the
bot stays silent, the agent hands it back and the bot answers again — twice in one
conversation. Real Kafka, a real Redis Cluster, real gateway and worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from examples import DEMO
from gateway.bus import InboundProducer
from gateway.handoff_desk import HandoffDesk, HandoffFeed, HandoffRefused, open_desk, open_feed
from streams.codecs import codec_for
from streams.state import connect_cluster
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, read_topic, start_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]

TENANT = "e2e"  # the ChatClient's tenant


@pytest.fixture
def impatient_pipeline(infra: Any, tmp_path: Path, demo_model: Path,
                       demo_index: Path) -> Iterator[Pipeline]:
    """A gateway and a worker serving the demo bot with a 3-second handoff timeout."""
    bot = tmp_path / "bot"
    shutil.copytree(DEMO.folder, bot)
    with (bot / "bot.yml").open("a", encoding="utf-8") as f:
        f.write("handoff:\n  timeout_minutes: 0.05\n")
    settings = make_settings(infra, tmp_path / "data",
                             demo_model).replace(bot_dir=str(bot))
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


@pytest_asyncio.fixture
async def desk(pipeline: Pipeline) -> AsyncIterator[tuple[HandoffDesk, HandoffFeed]]:
    async with console(pipeline) as opened:
        yield opened


@contextlib.asynccontextmanager
async def console(pipeline: Pipeline) -> AsyncIterator[tuple[HandoffDesk, HandoffFeed]]:
    settings = pipeline.settings
    redis = connect_cluster(settings.redis_startup_nodes)
    producer = InboundProducer(settings.kafka_bootstrap, linger_ms=1, client_id="console")
    producer.start()
    feed = open_feed(settings)
    feed.start()
    await asyncio.to_thread(feed.assigned.wait, 30)
    try:
        yield open_desk(settings, redis, producer), feed
    finally:
        await feed.close()
        await producer.close()
        await redis.aclose()


async def reply_with(chat: ChatClient, response: str, timeout: float = 30) -> dict[str, Any]:
    """The next reply frame, which must be the response named."""
    frame = await chat.next("reply", timeout)
    assert frame.get("response") == response, frame
    return frame


async def eventually(check: Any, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def one_handoff(chat: ChatClient, desk: HandoffDesk, feed: HandoffFeed,
                      agent: str) -> None:
    await chat.send("I want to talk to a human")
    await reply_with(chat, "utter_handoff")

    async def queued() -> Any:
        queue = await desk.queue(TENANT, agent)
        return next((r for r in queue.waiting if r.conversation_id == chat.conversation), None)

    record = await eventually(queued)
    assert "human_handoff" in record.reason
    assert any(line.role == "user" and "human" in line.text for line in record.transcript)

    # an agent of another tenant sees nothing and can take nothing
    other = await desk.queue("other-tenant", "eve")
    assert other.waiting == () and other.held == ()
    with pytest.raises(HandoffRefused) as refused:
        await desk.claim("other-tenant", "eve", chat.conversation)
    assert refused.value.code == "not_waiting"

    live: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    unsubscribe = feed.subscribe(TENANT, live.put_nowait)
    try:
        await desk.claim(TENANT, agent, chat.conversation)
        with pytest.raises(HandoffRefused) as second:  # a second agent's claim is refused
            await desk.claim(TENANT, "rival", chat.conversation)
        assert second.value.code == "not_waiting"
        with pytest.raises(HandoffRefused):
            await desk.send(TENANT, "rival", chat.conversation, "let me")
        joined = await reply_with(chat, "utter_handoff_claimed")
        assert agent in joined["text"]

        await chat.send("my parcel never arrived")
        relayed = await reply_with(chat, "handoff_relayed")  # the bot is silent
        assert relayed["text"] == ""

        async def user_message() -> Any:
            while True:
                event = await live.get()
                if event["type"] == "user_message":
                    return event
        event = await asyncio.wait_for(user_message(), 30)
        assert event["text"] == "my parcel never arrived"
        assert event["conversation_id"] == chat.conversation

        await desk.send(TENANT, agent, chat.conversation, "I'm on it, one moment.")
        said = await reply_with(chat, "agent_message")
        assert said["text"] == "I'm on it, one moment."
        assert said["sender"] == "agent" and said["agent_id"] == agent
        await desk.note(TENANT, agent, chat.conversation, "refund promised")
    finally:
        unsubscribe()

    await desk.release(TENANT, agent, chat.conversation, slots={"order_id": "12345"})
    await reply_with(chat, "utter_handoff_released")
    queue = await desk.queue(TENANT, agent)
    assert all(r.conversation_id != chat.conversation for r in (*queue.waiting, *queue.held))

    await chat.send("hello")
    back = await chat.next("reply", 30)
    assert back.get("response") not in ("handoff_relayed", "utter_handoff_waiting"), back
    assert back.get("sender", "bot") == "bot"


async def test_a_person_takes_over_and_hands_back_twice(
        pipeline: Pipeline, desk: tuple[HandoffDesk, HandoffFeed]) -> None:
    console, feed = desk
    async with ChatClient(pipeline.url, tenant=TENANT) as chat:
        await one_handoff(chat, console, feed, "ann")
        await one_handoff(chat, console, feed, "bob")


async def test_a_request_nobody_claims_expires_back_to_the_bot(
        impatient_pipeline: Pipeline) -> None:
    settings = impatient_pipeline.settings
    async with console(impatient_pipeline) as (desk_, _), \
            ChatClient(impatient_pipeline.url, tenant=TENANT) as chat:
        await chat.send("I want to talk to a human")
        await reply_with(chat, "utter_handoff")
        # nobody claims it: within the timeout (3 s) and a sweep (5 s) the bot takes it back
        # (the demo opens a ticket then: test_handoff_expiry.py)
        await reply_with(chat, "utter_handoff_expired_ticket", timeout=30)
        queue = await desk_.queue(TENANT, "ann")
        assert all(r.conversation_id != chat.conversation for r in queue.waiting)
        with pytest.raises(HandoffRefused):
            await desk_.claim(TENANT, "ann", chat.conversation)
        await chat.send("hello")
        back = await chat.next("reply", 30)
        assert back.get("response") not in ("handoff_relayed", "utter_handoff_waiting"), back
    events = [m for m in read_topic(settings, "handoff.events")
              if m.key() == chat.conversation.encode()]
    types = [codec_for("handoff_event").decode(m.value())["type"] for m in events]
    assert types == ["requested", "expired"]
