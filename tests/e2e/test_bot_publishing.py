"""A bot version published while conversations are in flight, through the whole pipeline.

`parley bot publish` puts a new version of a tenant's bot on the compacted ``bots``
topic; the running worker installs it without a restart. A conversation in the middle
of a form finishes on the version it began on; one that starts afterwards runs on the
new version; none is lost.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from agents.bots.bundle import bundle_from_folders
from agents.bots.publisher import BotPublisher
from examples import DEMO
from streams.topics import BOTS
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline
from tests.e2e.test_worker_crash import own_pipeline  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]

NEW_TEXT = "Version two: order {order_id} is {order_status}."


async def _turn(chat: ChatClient, text: str) -> dict[str, Any]:
    await chat.send(text)
    await chat.next("ack", 30)
    return await chat.next("reply", 30)


def _version_two(folder: Path) -> Path:
    """The demo bot with one response changed: what a builder would publish."""
    shutil.copytree(DEMO.folder, folder)
    responses = folder / "responses.yml"
    text = responses.read_text()
    start = text.index("  utter_order_status:")
    end = text.index("\n  utter_", start + 1)
    responses.write_text(text[:start] + f'  utter_order_status:\n    - "{NEW_TEXT}"'
                         + text[end:])
    return folder


async def test_a_bot_published_mid_conversation_loses_none_and_mixes_no_versions(
        own_pipeline: Pipeline, tmp_path: Path) -> None:  # noqa: F811
    settings = own_pipeline.settings
    chats = [ChatClient(own_pipeline.url) for _ in range(5)]
    for chat in chats:
        await chat.__aenter__()
    try:
        asked = await asyncio.gather(*(_turn(c, "where is my order?") for c in chats))
        assert all(a["response"] == "utter_ask_order_id" for a in asked), asked

        bundle = bundle_from_folders("e2e", _version_two(tmp_path / "v2"),  # ChatClient's
                                     Path(settings.nlu_model_dir))
        publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS))
        publisher.publish(bundle)
        publisher.flush()

        # A new conversation is served by version two once the worker installed it.
        deadline, fresh = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            async with ChatClient(own_pipeline.url) as probe:
                await _turn(probe, "where is my order?")
                fresh = await _turn(probe, "12345")
            if fresh["text"].startswith("Version two"):
                break
            await asyncio.sleep(1)
        assert fresh is not None and fresh["text"] == NEW_TEXT.format(order_id="12345",
                                                                      order_status="shipped")

        # The conversations that began on the first version finish on it: none lost.
        finished = await asyncio.gather(*(_turn(c, "12345") for c in chats))
    finally:
        for chat in chats:
            await chat.__aexit__(None, None, None)
    assert all(f["response"] == "utter_order_status" for f in finished), finished
    assert all("12345" in f["text"] and not f["text"].startswith("Version two")
               for f in finished), finished
