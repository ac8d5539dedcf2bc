"""Sending channel replies (gateway/channels/delivery.py ``ReplyDispatcher``), with fake
channels: each reply once, one conversation's in order, retries only for what may pass."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.channels.delivery import ReplyDispatcher
from gateway.channels.errors import SendError
from streams.codecs import codec_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

CODEC = codec_for("bot_reply")


def reply(conversation: str, seq: int, channel: str = "slack", text: str = "") -> bytes:
    return CODEC.encode({
        "event_id": f"{conversation}.{seq}.r", "tenant_id": "acme",
        "conversation_id": conversation, "user_id": "u", "channel": channel, "seq": seq,
        "timestamp": 1, "trace_id": "t", "reply_route": "gw",
        "payload": {"text": text or f"{conversation}#{seq}", "in_reply_to": "e",
                    "client_msg_id": "m"},
    })  # fmt: skip


class FakeChannel:
    def __init__(self, failures: list[SendError] | None = None, delay: float = 0) -> None:
        self.sent: list[str] = []
        self.attempts = 0
        self._failures = list(failures or [])
        self._delay = delay

    async def send(self, reply: Mapping[str, Any]) -> None:
        self.attempts += 1
        await asyncio.sleep(self._delay)
        if self._failures:
            raise self._failures.pop(0)
        self.sent.append(reply["payload"]["text"])


class MemorySentLog:
    def __init__(self) -> None:
        self.sent: set[str] = set()

    async def was_sent(self, reply_event_id: str) -> bool:
        return reply_event_id in self.sent

    async def mark_sent(self, reply_event_id: str) -> None:
        self.sent.add(reply_event_id)


async def no_sleep(seconds: float) -> None:
    pass


async def test_replies_go_to_their_channel_in_seq_order_and_web_replies_are_left_alone() -> None:
    slack, sms = FakeChannel(delay=0.001), FakeChannel()
    dispatcher = ReplyDispatcher(CODEC, {"slack": slack, "sms": sms}, MemorySentLog())
    await dispatcher.deliver([reply("slack-T1-D1", 2), reply("c-web", 1, "ws"),
                              reply("slack-T1-D1", 1), reply("sms-1-2", 1, "sms"),
                              reply("slack-T1-D2", 1), b"not avro"])
    assert slack.sent.index("slack-T1-D1#1") < slack.sent.index("slack-T1-D1#2")
    assert sorted(slack.sent) == ["slack-T1-D1#1", "slack-T1-D1#2", "slack-T1-D2#1"]
    assert sms.sent == ["sms-1-2#1"]


async def test_a_batch_read_again_is_not_sent_again() -> None:
    slack, log = FakeChannel(), MemorySentLog()
    dispatcher = ReplyDispatcher(CODEC, {"slack": slack}, log)
    batch = [reply("slack-T1-D1", 1), reply("slack-T1-D1", 2)]
    await dispatcher.deliver(batch)
    await dispatcher.deliver(batch)  # after a rebalance, by this or another gateway
    assert slack.sent == ["slack-T1-D1#1", "slack-T1-D1#2"]


async def test_a_failure_that_may_pass_is_retried_and_one_that_cannot_is_not() -> None:
    flaky = FakeChannel([SendError("slack", "503", retryable=True)] * 2)
    dispatcher = ReplyDispatcher(CODEC, {"slack": flaky}, MemorySentLog(), sleep=no_sleep)
    await dispatcher.deliver([reply("slack-T1-D1", 1)])
    assert (flaky.attempts, flaky.sent) == (3, ["slack-T1-D1#1"])

    refused, log = FakeChannel([SendError("slack", "invalid_auth")]), MemorySentLog()
    dispatcher = ReplyDispatcher(CODEC, {"slack": refused}, log, sleep=no_sleep)
    await dispatcher.deliver([reply("slack-T1-D1", 1), reply("slack-T1-D1", 2)])
    assert (refused.attempts, refused.sent) == (2, ["slack-T1-D1#2"])  # the next still goes
    assert log.sent == {"slack-T1-D1.2.r"}  # the failed one is not marked sent


async def test_a_channel_down_for_good_gives_up_after_three_attempts() -> None:
    down = FakeChannel([SendError("sms", "timeout", retryable=True)] * 10)
    dispatcher = ReplyDispatcher(CODEC, {"sms": down}, MemorySentLog(), sleep=no_sleep)
    await dispatcher.deliver([reply("sms-1-2", 1, "sms")])
    assert (down.attempts, down.sent) == (3, [])
