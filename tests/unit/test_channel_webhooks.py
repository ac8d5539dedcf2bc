"""The webhooks' answers when something is missing or down (gateway/channels/service.py),
with fakes for Redis and the bus: what Slack and Twilio are told, and whether a retry of
the same delivery is then taken. The happy path on the real stack is in
tests/integration/test_gateway_channels.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.admission import InFlight
from gateway.api import create_app
from gateway.bus import DeliveryError
from gateway.channels import (
    Channels,
    InboundMessage,
    Overloaded,
    ReplyDispatcher,
    SmsChannel,
    slack,
    sms,
)
from gateway.channels.errors import SendError
from gateway.channels.service import SmsSender
from kernel.settings import Settings
from streams.codecs import codec_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

SECRET, TOKEN, SID = "slack-secret", "twilio-token", "AC" + "1" * 32
SLACK_URL = "http://gw/channels/slack/events"
SMS_URL = "http://gw/channels/twilio/sms"


class FakeRecords:
    async def offer(self, keys: Any, choices: Any) -> None:
        pass

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.down = False

    async def first_delivery(self, channel: str, delivery_id: str) -> bool:
        if self.down:
            raise RedisConnectionError("down")
        taken = (channel, delivery_id) not in self.seen
        self.seen.add((channel, delivery_id))
        return taken

    async def forget_delivery(self, channel: str, delivery_id: str) -> None:
        self.seen.discard((channel, delivery_id))

    async def offered(self, keys: Any) -> list[str]:
        return []


class FakeIngress:
    """Publishes into a list; ``outcome`` decides what the broker does."""

    def __init__(self) -> None:
        self.in_flight = InFlight(10, 30)
        self.published: list[InboundMessage] = []
        self.pending: list[asyncio.Future[int]] = []
        self.outcome: str = "ok"  # ok | refused | slow | overloaded | redis

    async def publish(self, message: InboundMessage) -> tuple[str, asyncio.Future[int]]:
        if self.outcome == "overloaded":
            raise Overloaded(message.channel, "busy")
        if self.outcome == "redis":
            raise RedisConnectionError("down")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.outcome == "ok":
            self.published.append(message)
            future.set_result(0)
        elif self.outcome == "refused":
            future.set_exception(DeliveryError("broker down"))
        else:  # "slow": resolved by the test
            self.pending.append(future)
        return f"e{len(self.published)}", future


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[tuple[Channels, FakeIngress, FakeRecords, httpx.AsyncClient]]:
    settings = Settings.from_env({}, slack_signing_secret=SECRET, slack_bot_token="xoxb-1",
                                 twilio_account_sid=SID, twilio_auth_token=TOKEN,
                                 slack_tenant="acme", twilio_tenant="acme")
    ingress, records = FakeIngress(), FakeRecords()
    channels = Channels(settings, cast(Any, None), cast(Any, ingress), cast(Any, None))
    channels.records = cast(Any, records)
    transport = httpx.ASGITransport(app=create_app(channels.routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield channels, ingress, records, http
    await channels.close()


def slack_request(event_id: str = "Ev1", text: str = "hi") -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "event_callback", "team_id": "T1", "event_id": event_id,
                       "event": {"type": "message", "channel": "D1", "user": "U1",
                                 "text": text, "ts": "1.1"}}).encode()
    ts = str(int(time.time()))
    return body, {"X-Slack-Request-Timestamp": ts,
                  "X-Slack-Signature": slack.sign(SECRET, ts, body)}


def sms_request(account: str = SID, sid: str = "SM" + "2" * 32) -> tuple[str, dict[str, str]]:
    form = [("MessageSid", sid), ("AccountSid", account), ("From", "+15551230000"),
            ("To", "+15559870000"), ("Body", "hi")]
    return urlencode(form), {"Content-Type": "application/x-www-form-urlencoded",
                             "X-Twilio-Signature": sms.sign(TOKEN, SMS_URL, form)}


Setup = tuple[Channels, FakeIngress, FakeRecords, httpx.AsyncClient]


@pytest.mark.parametrize("outcome", ["refused", "overloaded", "redis"])
async def test_a_message_the_bus_did_not_take_gets_503_and_its_retry_is_taken(
    setup: Setup, outcome: str,
) -> None:
    _, ingress, _, http = setup
    body, headers = slack_request()
    ingress.outcome = outcome
    assert (await http.post(SLACK_URL, content=body, headers=headers)).status_code == 503
    ingress.outcome = "ok"
    assert (await http.post(SLACK_URL, content=body, headers=headers)).status_code == 200
    assert [m.text for m in ingress.published] == ["hi"]


async def test_redis_down_gets_503_before_anything_is_published(setup: Setup) -> None:
    _, ingress, records, http = setup
    records.down = True
    body, headers = slack_request()
    answer = await http.post(SLACK_URL, content=body, headers=headers)
    assert (answer.status_code, ingress.published) == (503, [])


async def test_slack_gets_its_answer_in_time_while_the_broker_is_slow(
    setup: Setup, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, ingress, records, http = setup
    monkeypatch.setattr("gateway.channels.service.SLACK_ACK_WITHIN_S", 0.2)
    ingress.outcome = "slow"
    body, headers = slack_request()
    began = time.monotonic()
    assert (await http.post(SLACK_URL, content=body, headers=headers)).status_code == 200
    assert time.monotonic() - began < 1
    assert ("slack", "Ev1") in records.seen  # a retry now would be dropped as a duplicate
    (confirmation,) = ingress.pending
    confirmation.set_result(0)  # the broker confirms later; close() does not wait for long


async def test_messages_without_text_are_acknowledged_and_not_published(setup: Setup) -> None:
    _, ingress, _, http = setup
    body, headers = slack_request(text="   ")
    assert (await http.post(SLACK_URL, content=body, headers=headers)).status_code == 200
    assert ingress.published == []


async def test_an_oversized_body_is_refused_unread(setup: Setup) -> None:
    _, ingress, _, http = setup
    answer = await http.post(SLACK_URL, content=b"x" * (2 << 20))
    assert (answer.status_code, ingress.published) == (413, [])


async def test_a_sms_for_another_twilio_account_is_refused(setup: Setup) -> None:
    _, ingress, _, http = setup
    form, headers = sms_request(account="AC" + "9" * 32)
    answer = await http.post(SMS_URL, content=form, headers=headers)
    assert (answer.status_code, answer.text.strip()) == (403, "message for another Twilio account")
    form, headers = sms_request()
    answer = await http.post(SMS_URL, content=form, headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    assert [m.keys.conversation_id for m in ingress.published] == ["sms-15559870000-15551230000"]


async def test_a_channel_that_is_not_configured_is_not_there() -> None:
    channels = Channels(Settings.from_env({}), cast(Any, None), cast(Any, None),
                        cast(Any, None))
    transport = httpx.ASGITransport(app=create_app(channels.routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        body, headers = slack_request()
        assert (await http.post(SLACK_URL, content=body, headers=headers)).status_code == 404
        form, headers = sms_request()
        assert (await http.post(SMS_URL, content=form, headers=headers)).status_code == 404
    assert channels.delivery is None  # no consumer group joined for nothing
    await channels.close()


class FlakyTwilio:
    """Fails the second message once, as a timeout would."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failed = False

    async def send(self, sender: str, recipient: str, body: str) -> None:
        if len(self.sent) == 1 and not self.failed:
            self.failed = True
            raise SendError("sms", "timeout", retryable=True)
        self.sent.append(body)


async def test_a_long_sms_retried_after_a_failed_part_does_not_repeat_the_parts_sent() -> None:
    twilio, records = FlakyTwilio(), FakeRecords()
    sender = SmsSender(SmsChannel("acme"), cast(Any, twilio), cast(Any, records))
    dispatcher = ReplyDispatcher(codec_for("bot_reply"), {"sms": sender}, MemorySent(),
                                 sleep=no_sleep)
    text = " ".join(["word"] * 700)  # three messages
    await dispatcher.deliver([codec_for("bot_reply").encode({
        "event_id": "e.r", "tenant_id": "acme", "conversation_id": "sms-15559870000-15551230000",
        "user_id": "u", "channel": "sms", "seq": 1, "timestamp": 1, "trace_id": "e",
        "reply_route": "gw", "payload": {"text": text, "in_reply_to": "e", "client_msg_id": "m"},
    })])  # fmt: skip
    assert twilio.failed
    assert [b[:6] for b in twilio.sent] == ["(1/3) ", "(2/3) ", "(3/3) "]


class MemorySent:
    async def was_sent(self, reply_event_id: str) -> bool:
        return False

    async def mark_sent(self, reply_event_id: str) -> None:
        pass


async def no_sleep(seconds: float) -> None:
    pass
