"""Slack and SMS through a real gateway, broker and Redis Cluster, with the test as the
worker (it produces the BotReply) and as Slack's and Twilio's APIs (local HTTP servers
that check the credentials the gateway sends)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import pytest_asyncio
from confluent_kafka import Message, Producer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api import ApiServer
from gateway.channels import slack, sms
from gateway.server import Gateway
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.follow import TopicFollower
from streams.security import kafka_client_config
from streams.topics import CHAT_INBOUND, CHAT_OUTBOUND

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token"
# Fresh ids per run: sequence numbers and seen deliveries live in Redis, which external
# test infrastructure (PARLEY_TEST_REDIS_NODES) keeps between runs.
TEAM = "T" + uuid.uuid4().hex[:8].upper()
OUR_NUMBER = "+1650" + str(uuid.uuid4().int)[:7]
THEIR_NUMBER = "+16505551199"


@dataclass
class FakeApis:
    """Slack's Web API and Twilio's Messages API, as far as the gateway uses them."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    sms: list[dict[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    server: ApiServer | None = None

    async def post_message(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {BOT_TOKEN}":
            self.refused.append("slack")
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        self.posts.append(await request.json())
        return JSONResponse({"ok": True, "channel": "D0PNCRP9N", "ts": "1.2"})

    async def messages(self, request: Request) -> Response:
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if (request.path_params["sid"] != ACCOUNT_SID
                or request.headers.get("authorization") != f"Basic {expected}"):
            self.refused.append("sms")
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        self.sms.append(dict(parse_qsl((await request.body()).decode())))
        return JSONResponse({"sid": f"SM{len(self.sms):032d}"}, status_code=201)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url


@pytest_asyncio.fixture
async def apis() -> AsyncIterator[FakeApis]:
    fake = FakeApis()
    fake.server = ApiServer("127.0.0.1", 0, [
        Route("/api/chat.postMessage", fake.post_message, methods=["POST"]),
        Route("/2010-04-01/Accounts/{sid}/Messages.json", fake.messages, methods=["POST"]),
    ])
    await fake.server.start()
    yield fake
    await fake.server.close()


def channel_settings(settings: Settings, apis: FakeApis) -> Settings:
    return settings.replace(
        gateway_port=0, slack_signing_secret=SIGNING_SECRET, slack_bot_token=BOT_TOKEN,
        slack_tenant="acme", slack_api_url=f"{apis.url}/api",
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_tenant="acme",
        twilio_api_url=apis.url,
    )


@pytest_asyncio.fixture
async def gateway(settings: Settings, apis: FakeApis) -> AsyncIterator[Gateway]:
    server = Gateway(channel_settings(settings, apis))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


class Inbound:
    """Every ChatMessage on the test's chat.inbound, decoded, as it arrives."""

    def __init__(self, settings: Settings) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._codec = codec_for("chat_message")
        self._follower = TopicFollower(settings.kafka_bootstrap, settings.topic(CHAT_INBOUND),
                                       self._on_batch, from_beginning=True)

    def _on_batch(self, records: list[Message]) -> None:
        with self._lock:
            self.messages.extend(self._codec.decode(r.value()) for r in records)

    async def wait_for(self, count: int, within: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} messages"
            await asyncio.sleep(0.05)
        return list(self.messages)


@pytest.fixture
def inbound(settings: Settings) -> Iterator[Inbound]:
    reader = Inbound(settings)
    reader._follower.start()
    yield reader
    reader._follower.stop()


def slack_event(text: str, event_id: str, channel: str = "D0PNCRP9N") -> bytes:
    return json.dumps({
        "token": "XXYYZZ", "team_id": TEAM, "api_app_id": "A0PNCHHK2",
        "event": {"type": "message", "channel": channel, "user": "U061F7AUR", "text": text,
                  "ts": "1525215129.000001", "event_ts": "1525215129.000001",
                  "channel_type": "im"},
        "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": "U0PNCHHK2", "is_bot": True}],
    }).encode()  # fmt: skip


def slack_headers(body: bytes, secret: str = SIGNING_SECRET, *, age_s: int = 0,
                  retry: int | None = None) -> dict[str, str]:
    timestamp = str(int(time.time()) - age_s)
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": timestamp,
               "X-Slack-Signature": slack.sign(secret, timestamp, body)}
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return headers


def sms_form(text: str, sid: str) -> list[tuple[str, str]]:
    return [("ToCountry", "US"), ("SmsMessageSid", sid), ("NumMedia", "0"), ("SmsSid", sid),
            ("SmsStatus", "received"), ("Body", text), ("To", OUR_NUMBER), ("NumSegments", "1"),
            ("MessageSid", sid), ("AccountSid", ACCOUNT_SID), ("From", THEIR_NUMBER),
            ("ApiVersion", "2010-04-01")]


def reply(settings: Settings, message: dict[str, Any], text: str, *, seq: int = 1,
          quick_replies: tuple[str, ...] = ()) -> None:
    """What a worker does: the BotReply to ``message`` on chat.outbound."""
    value = codec_for("bot_reply").encode({
        **{k: message[k] for k in ("tenant_id", "conversation_id", "user_id", "channel",
                                   "trace_id", "reply_route")},
        "event_id": f"{message['event_id']}.r", "seq": seq,
        "timestamp": int(time.time() * 1000),
        "payload": {"text": text, "in_reply_to": message["event_id"],
                    "client_msg_id": message["payload"]["client_msg_id"],
                    "quick_replies": list(quick_replies)},
    })  # fmt: skip
    producer = Producer(kafka_client_config(settings))
    producer.produce(settings.topic(CHAT_OUTBOUND), key=message["conversation_id"], value=value)
    producer.flush(10)


async def eventually(condition: Callable[[], bool], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_signed_slack_message_reaches_the_bus_and_its_reply_is_posted_once(
    gateway: Gateway, settings: Settings, apis: FakeApis, inbound: Inbound,
) -> None:
    url = f"{gateway.api.url}/channels/slack/events"
    body = slack_event("where is my order?", f"Ev{TEAM}1")
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(url, content=body, headers=slack_headers(body))
        assert answer.status_code == 200
        # Slack's retry of the same event (it thought the first unanswered): taken once.
        again = await http.post(url, content=body, headers=slack_headers(body, retry=1))
        assert again.status_code == 200

        (message,) = await inbound.wait_for(1)
        assert (message["channel"], message["tenant_id"], message["conversation_id"]) == \
            ("slack", "acme", f"slack-{TEAM}-D0PNCRP9N")
        assert (message["user_id"], message["seq"]) == (f"slack-{TEAM}-U061F7AUR", 1)
        assert message["payload"]["text"] == "where is my order?"

        reply(settings, message, "Which one?", quick_replies=("The lamp", "The chair"))
        await eventually(lambda: len(apis.posts) == 1)
        assert apis.posts[0] == {"channel": "D0PNCRP9N", "text": (
            "Which one?\n\n1. The lamp\n2. The chair\n(reply with a number)")}

        # "2" answers the numbered list: the worker reads the choice it stands for.
        body = slack_event("2", f"Ev{TEAM}2")
        assert (await http.post(url, content=body, headers=slack_headers(body))).status_code \
            == 200
        second = (await inbound.wait_for(2))[1]
        assert (second["payload"]["text"], second["seq"]) == ("The chair", 2)

    await asyncio.sleep(1)  # nothing else arrives: no retried message, no second post
    assert len(inbound.messages) == 2 and len(apis.posts) == 1 and apis.refused == []


async def test_slack_url_verification_is_answered_with_the_challenge(gateway: Gateway) -> None:
    body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "type": "url_verification",
                       "challenge": "3eZbrw1aBm2rZgRNFdx"}).encode()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{gateway.api.url}/channels/slack/events", content=body,
                                 headers=slack_headers(body))
    assert (answer.status_code, answer.json()) == (200, {"challenge": "3eZbrw1aBm2rZgRNFdx"})


async def test_a_signed_sms_reaches_the_bus_and_a_long_reply_goes_out_in_parts(
    gateway: Gateway, settings: Settings, apis: FakeApis, inbound: Inbound,
) -> None:
    url = f"{gateway.api.url}/channels/twilio/sms"
    sid = "SM" + uuid.uuid4().hex
    form = sms_form("where is my order?", sid)
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.post(url, content=urlencode(form), headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sms.sign(AUTH_TOKEN, url, form)})
    assert answer.status_code == 200 and "<Response>" in answer.text

    (message,) = await inbound.wait_for(1)
    assert (message["channel"], message["tenant_id"], message["conversation_id"]) == \
        ("sms", "acme", f"sms-{OUR_NUMBER[1:]}-{THEIR_NUMBER[1:]}")
    assert message["payload"]["client_msg_id"] == sid

    long_text = " ".join(f"step{i}" for i in range(500))  # about 3,400 characters
    reply(settings, message, long_text)
    await eventually(lambda: len(apis.sms) == 3)
    assert [m["Body"][:6] for m in apis.sms] == ["(1/3) ", "(2/3) ", "(3/3) "]
    assert all((m["From"], m["To"]) == (OUR_NUMBER, THEIR_NUMBER) for m in apis.sms)
    assert all(len(m["Body"]) <= sms.MAX_SMS_CHARS for m in apis.sms)
    assert " ".join(m["Body"][6:] for m in apis.sms) == long_text
    assert apis.refused == []


async def test_requests_not_signed_by_the_channel_are_refused_and_publish_nothing(
    gateway: Gateway, apis: FakeApis, inbound: Inbound,
) -> None:
    slack_url = f"{gateway.api.url}/channels/slack/events"
    sms_url = f"{gateway.api.url}/channels/twilio/sms"
    body = slack_event("let me in", f"Ev{TEAM}X")
    form = sms_form("let me in", "SM" + uuid.uuid4().hex)
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(timeout=10) as http:
        refused = [
            await http.post(slack_url, content=body, headers={"Content-Type": "application/json"}),
            await http.post(slack_url, content=body, headers=slack_headers(body, "wrong")),
            await http.post(slack_url, content=body, headers=slack_headers(body, age_s=600)),
            await http.post(slack_url, content=body.replace(b"let me in", b"let me out"),
                            headers=slack_headers(body)),
            await http.post(sms_url, content=urlencode(form), headers=form_headers),
            await http.post(sms_url, content=urlencode(form), headers={
                **form_headers, "X-Twilio-Signature": sms.sign("wrong", sms_url, form)}),
            await http.post(sms_url, content=urlencode([*form, ("Extra", "1")]), headers={
                **form_headers, "X-Twilio-Signature": sms.sign(AUTH_TOKEN, sms_url, form)}),
        ]
        # Not a webhook at all: a GET, and a path nobody serves.
        wrong_method = await http.get(slack_url)
        unknown = await http.post(f"{gateway.api.url}/channels/teams/events")
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert [r.text.strip() for r in refused] == [
        "missing X-Slack-Signature or X-Slack-Request-Timestamp", "bad signature",
        "request timestamp more than 5 minutes from now", "bad signature",
        "missing X-Twilio-Signature", "bad signature", "bad signature"]
    assert (wrong_method.status_code, unknown.status_code) == (405, 404)
    await asyncio.sleep(2)
    assert inbound.messages == []
    assert apis.posts == [] and apis.sms == []


async def test_with_two_gateways_each_channel_reply_is_sent_once(
    settings: Settings, apis: FakeApis, inbound: Inbound,
) -> None:
    both = [Gateway(channel_settings(settings, apis).replace(gateway_id=f"gw-{i}"))
            for i in range(2)]
    for server in both:
        await server.start()
    try:
        for server in both:
            await server.wait_ready()
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(8):  # conversations spread over the topic's partitions
                body = slack_event(f"hello {i}", f"Ev{TEAM}T{i}", channel=f"D{i:08d}")
                gw = both[i % 2]
                answer = await http.post(f"{gw.api.url}/channels/slack/events", content=body,
                                         headers=slack_headers(body))
                assert answer.status_code == 200
        messages = await inbound.wait_for(8)
        for message in messages:
            reply(settings, message, f"answer to {message['payload']['text']}")
        await eventually(lambda: len(apis.posts) >= 8)
        await asyncio.sleep(2)  # a second copy would have come by now
        assert sorted(p["text"] for p in apis.posts) == sorted(
            f"answer to hello {i}" for i in range(8))
    finally:
        for server in both:
            await server.close()
