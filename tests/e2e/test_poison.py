"""Poison events under load: the bad ones are dead-lettered, every good one answered.

The issue's attack, against a real pipeline: while chat clients talk, events
that decode but hold ids no conversation can have (a tenant with a space or a
slash, a 500-character conversation id) and bytes that are not Avro at all are
produced straight onto ``chat.inbound``, keyed like the live conversations so
that they land in the partitions those conversations use; a second worker joins
meanwhile (a rebalance). Every message the gateway acknowledged gets exactly one
reply, in order, and the dead-letter topics hold the bad events with their errors.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.codecs import codec_for
from streams.dead_letters import read_dead_letter
from streams.topics import CHAT_INBOUND, KNOWLEDGE_REQUESTS, dlq_of
from tests.e2e.conftest import Pipeline, produce, read_topic
from tests.e2e.test_worker_crash import (  # own_pipeline: a fixture, 1 gateway + 1 worker
    Conversations,
    assert_topic_repeats_are_resends,
    own_pipeline,  # noqa: F401
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]


def envelope(**ids: str) -> dict[str, Any]:
    event_id = uuid.uuid4().hex
    return {"event_id": event_id, "tenant_id": "e2e", "conversation_id": "c-ok",
            "user_id": "attacker", "channel": "ws", "seq": 1,
            "timestamp": datetime.now(UTC), "trace_id": event_id, "reply_route": "", **ids}


def bad_messages() -> list[tuple[bytes, str]]:
    """Values for chat.inbound that no worker can process, with the error class each gets."""
    encode = codec_for("chat_message").encode
    payload = {"text": "hello", "client_msg_id": "m-bad", "locale": None}
    return [
        (encode({**envelope(tenant_id="acme eu"), "payload": payload}),
         "streams.keys.InvalidIdError"),
        (encode({**envelope(tenant_id="acme/eu"), "payload": payload}),
         "streams.keys.InvalidIdError"),
        (encode({**envelope(conversation_id="c" * 500), "payload": payload}),
         "streams.keys.InvalidIdError"),
        (b"\x00not avro at all " + uuid.uuid4().bytes, "kernel.errors.DecodeError"),
    ]


def bad_knowledge_request() -> bytes:
    return codec_for("knowledge_request").encode({
        **envelope(tenant_id="acme eu"),
        "payload": {"question": "what is my balance", "client_msg_id": "m-bad",
                    "filters": {}},
    })


async def dead_letters(pipeline: Pipeline, topic: str, expected: int) -> list[Any]:
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while len(found) < expected and time.monotonic() < deadline:
        found = await asyncio.to_thread(read_topic, pipeline.settings, dlq_of(topic))
    return found


async def test_poison_events_under_load_and_a_rebalance_lose_no_acknowledged_message(
        own_pipeline: Pipeline) -> None:  # noqa: F811 (the fixture imported above)
    stack, settings = own_pipeline.stack, own_pipeline.settings
    sent: dict[tuple[bytes, bytes], str] = {}  # (key, value) -> error class

    def attack(conversations: list[str]) -> None:
        for conversation in conversations:
            bad = bad_messages()
            produce(settings, CHAT_INBOUND, conversation, *(value for value, _ in bad))
            sent.update({(conversation.encode(), value): error for value, error in bad})

    async with Conversations(own_pipeline.url) as chats:
        talking = chats.talk(12)
        live = [chat.conversation for chat in chats.clients]
        await asyncio.sleep(1.5)
        await asyncio.to_thread(attack, live)
        produce(settings, KNOWLEDGE_REQUESTS, live[0], bad_knowledge_request())
        await asyncio.sleep(1.5)
        second = stack.start_worker(name="worker-second")  # rebalance: partitions split
        await asyncio.to_thread(stack.wait_ready, [second], 90)
        await asyncio.to_thread(attack, live)  # and again, with two workers
        await talking
        await chats.wait_answered()

    chats.assert_answered_exactly_once()
    assert_topic_repeats_are_resends(own_pipeline, chats)

    records = await dead_letters(own_pipeline, CHAT_INBOUND, len(sent))
    letters = {(m.key(), m.value()): read_dead_letter(m.headers() or []) for m in records}
    assert set(letters) == set(sent), "each bad event is dead-lettered, once"
    for key_value, letter in letters.items():
        assert letter.error_class == sent[key_value]
        assert letter.topic == settings.topic(CHAT_INBOUND) and letter.offset >= 0
        assert letter.consumer == "conversation" and letter.error
    assert any("invalid tenant id 'acme/eu'" in letter.error for letter in letters.values())

    (request,) = await dead_letters(own_pipeline, KNOWLEDGE_REQUESTS, 1)
    letter = read_dead_letter(request.headers() or [])
    assert (letter.consumer, letter.error_class) == ("knowledge", "streams.keys.InvalidIdError")
    assert request.key() == live[0].encode()
    for worker in (c for c in stack.children if c.name.startswith("worker")):
        assert worker.alive(), f"{worker.name} is still running"
        assert "Traceback" not in worker.log_path.read_text(), f"nothing escaped {worker.name}"
