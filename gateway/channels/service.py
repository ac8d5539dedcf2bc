"""The channels of one gateway: their webhooks, and the delivery of their replies.

:class:`Channels` is built from settings (a channel is on when its secret is set:
``PARLEY_SLACK_SIGNING_SECRET``, ``PARLEY_TWILIO_AUTH_TOKEN``), gives the routes to
mount on the gateway's API app (gateway/api.py), and runs the consumer-group
delivery of replies (gateway/channels/delivery.py) while any channel is on.

Webhooks answer fast and never lose a message they acknowledged:

* a request is verified before anything else is read from it (403 otherwise: the
  reason is sent, never the expected signature);
* a delivery seen before (a Slack retry, the same ``event_id``) is acknowledged and
  dropped, whichever gateway took the first one;
* the message is numbered and produced like a WebSocket message. Slack wants an
  answer within 3 s: the webhook waits up to :data:`SLACK_ACK_WITHIN_S` for the
  broker, answers 200 then even if the broker has not confirmed yet (the event is
  already in the producer, which retries it), and answers 503 when Redis or the
  broker refused it, after forgetting the delivery so that Slack's retry is taken.
  Twilio waits 15 s, so its webhook waits for the broker's answer.

Secrets are never logged: log lines name the channel and the reason only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from prometheus_client import Counter
from redis.asyncio.cluster import RedisCluster
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api import read_body
from gateway.bus import DeliveryError
from gateway.channels import slack, sms
from gateway.channels.base import InboundMessage, RichReply, fit_text, pick_choice
from gateway.channels.delivery import ChannelDelivery, ReplyDispatcher, Sender
from gateway.channels.errors import ChannelError, Overloaded, PayloadError, SignatureError
from gateway.channels.ingress import ChannelRecords, Ingress
from kernel.errors import ConfigError
from kernel.settings import Settings
from streams.codecs import AvroCodec
from streams.keys import ConversationKeys, InvalidIdError, validate_id
from streams.state import REDIS_UNAVAILABLE
from streams.topics import CHAT_OUTBOUND

__all__ = ["SLACK_ACK_WITHIN_S", "Channels", "SlackSender", "SmsSender"]

logger = logging.getLogger(__name__)

WEBHOOK_MESSAGES = Counter(
    "parley_channel_webhooks_total",
    "Webhook requests by channel and outcome: accepted, duplicate, ignored, refused "
    "(signature), malformed, unavailable (503).",
    ["channel", "outcome"],
)

SLACK_ACK_WITHIN_S = 2.0
TWILIO_ACK_WITHIN_S = 10.0
PARTS_REMEMBERED = 1024
#: Webhook bodies are small (a Slack event is a few KB); anything far larger is refused.
MAX_BODY_BYTES = 1 << 20
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class SlackSender:
    """Renders a reply for Slack and posts it; remembers its quick replies."""

    def __init__(self, channel: slack.SlackChannel, client: slack.SlackClient,
                 records: ChannelRecords) -> None:
        self._channel, self._client, self._records = channel, client, records

    async def send(self, reply: Mapping[str, Any]) -> None:
        await _remember_choices(self._records, reply)
        await self._client.post_message(self._channel.render(reply))


class SmsSender:
    """Renders a reply as SMS bodies and sends them in order; remembers its quick replies.

    A send that fails after some parts went out is retried from the first part not sent
    (parts sent are remembered here, for the last :data:`PARTS_REMEMBERED` replies), so
    a user does not get part 1 twice because part 2 met a timeout."""

    def __init__(self, channel: sms.SmsChannel, client: sms.TwilioClient,
                 records: ChannelRecords) -> None:
        self._channel, self._client, self._records = channel, client, records
        self._parts_sent: OrderedDict[str, int] = OrderedDict()

    async def send(self, reply: Mapping[str, Any]) -> None:
        ours, theirs = sms.numbers(reply["conversation_id"])
        await _remember_choices(self._records, reply)
        event_id = reply["event_id"]
        bodies = self._channel.render(reply)
        for index in range(self._parts_sent.get(event_id, 0), len(bodies)):
            await self._client.send(ours, theirs, bodies[index])
            self._parts_sent[event_id] = index + 1
            self._parts_sent.move_to_end(event_id)
            while len(self._parts_sent) > PARTS_REMEMBERED:
                self._parts_sent.popitem(last=False)
        self._parts_sent.pop(event_id, None)


async def _remember_choices(records: ChannelRecords, reply: Mapping[str, Any]) -> None:
    keys = ConversationKeys(reply["tenant_id"], reply["conversation_id"])
    try:
        await records.offer(keys, RichReply.from_bot_reply(reply).quick_replies)
    except REDIS_UNAVAILABLE as exc:  # the list is still shown; a number is then read as text
        logger.warning("channels.choices.unsaved error=%r", exc)


def _tenant(settings: Settings, name: str) -> str:
    """A channel's tenant setting, checked at start-up (it goes into every key)."""
    value: str = getattr(settings, name)
    try:
        return validate_id("tenant id", value)
    except InvalidIdError:
        env = Settings.__dataclass_fields__[name].metadata["env"]
        raise ConfigError(env, value, "a tenant id: 1-128 characters from "
                          "A-Z a-z 0-9 . _ @ -") from None


def _answer(channel: str, outcome: str, response: Response) -> Response:
    WEBHOOK_MESSAGES.labels(channel, outcome).inc()
    return response


def _refused(status: int, reason: str) -> Response:
    return PlainTextResponse(reason + "\n", status_code=status)


class Channels:
    """The gateway's Slack and SMS channels (either may be off)."""

    def __init__(self, settings: Settings, redis: RedisCluster, ingress: Ingress,
                 reply_codec: AvroCodec, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._ingress = ingress
        self._clock = clock
        self.slack = slack.SlackChannel(_tenant(settings, "slack_tenant")) \
            if settings.slack_signing_secret else None
        self.sms = sms.SmsChannel(_tenant(settings, "twilio_tenant")) \
            if settings.twilio_auth_token else None
        self.records = ChannelRecords(redis, choices_ttl_s=settings.session_ttl_s)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        senders: dict[str, Sender] = {}
        if self.slack is not None:
            senders[self.slack.name] = SlackSender(self.slack, slack.SlackClient(
                self._http, settings.slack_api_url, settings.slack_bot_token), self.records)
        if self.sms is not None:
            senders[self.sms.name] = SmsSender(self.sms, sms.TwilioClient(
                self._http, settings.twilio_api_url, settings.twilio_account_sid,
                settings.twilio_auth_token), self.records)
        self.delivery = ChannelDelivery(
            settings.kafka_bootstrap, settings.topic(CHAT_OUTBOUND),
            settings.topic_prefix + settings.channel_consumer_group,
            ReplyDispatcher(reply_codec, senders, self.records)) if senders else None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def routes(self) -> list[BaseRoute]:
        """The webhook routes (each answers 404 while its channel is off)."""
        return [
            Route("/channels/slack/events", self.slack_events, methods=["POST"]),
            Route("/channels/twilio/sms", self.twilio_sms, methods=["POST"]),
        ]

    @property
    def ready(self) -> bool:
        """Reply delivery has joined its group (always, with no channel configured): for
        the gateway's /readyz."""
        return self.delivery is None or self.delivery.assigned.is_set()

    def start(self) -> None:
        if self.delivery is not None:
            self.delivery.start()
        logger.info("channels.started slack=%s sms=%s", self.slack is not None,
                    self.sms is not None)

    async def close(self) -> None:
        """Stop delivering, let accepted webhook messages settle, close the HTTP client."""
        if self.delivery is not None:
            await self.delivery.close()
        if self._tasks:  # messages on their way to the broker (the producer closes after)
            _, unsettled = await asyncio.wait(self._tasks, timeout=5)
            for task in unsettled:
                task.cancel()
            if unsettled:
                await asyncio.wait(unsettled)
        await self._http.aclose()

    # --- webhooks -----------------------------------------------------------------

    async def slack_events(self, request: Request) -> Response:
        if self.slack is None:
            return _refused(404, "the Slack channel is not configured")
        body = await read_body(request, MAX_BODY_BYTES)
        if body is None:
            return _answer("slack", "malformed", _refused(413, "body too large"))
        try:
            slack.verify(self.settings.slack_signing_secret,
                         request.headers.get("x-slack-request-timestamp"),
                         request.headers.get("x-slack-signature"), body, self._clock())
            event = slack.parse_event(body)
        except SignatureError as exc:
            logger.info("channels.webhook.refused channel=slack reason=%s", exc.reason)
            return _answer("slack", "refused", _refused(403, exc.reason))
        except PayloadError as exc:
            logger.info("channels.webhook.malformed channel=slack reason=%s", exc.reason)
            return _answer("slack", "malformed", _refused(400, exc.reason))
        if isinstance(event, slack.UrlVerification):
            return _answer("slack", "ignored", JSONResponse({"challenge": event.challenge}))
        if event is None:
            return _answer("slack", "ignored", Response(status_code=200))
        retry = request.headers.get("x-slack-retry-num")
        return await self._take(self.slack.normalise(event), event.event_id,
                                SLACK_ACK_WITHIN_S, Response(status_code=200), retry=retry)

    async def twilio_sms(self, request: Request) -> Response:
        if self.sms is None:
            return _refused(404, "the SMS channel is not configured")
        body = await read_body(request, MAX_BODY_BYTES)
        if body is None:
            return _answer("sms", "malformed", _refused(413, "body too large"))
        url = self.settings.twilio_webhook_url or str(request.url)
        try:
            params = sms.parse_form(body)
            sms.verify(self.settings.twilio_auth_token, url, params,
                       request.headers.get("x-twilio-signature"))
        except ChannelError as exc:  # an unreadable form cannot be verified either
            logger.info("channels.webhook.refused channel=sms reason=%s", exc.reason)
            reason = "bad signature" if isinstance(exc, PayloadError) else exc.reason
            return _answer("sms", "refused", _refused(403, reason))
        try:
            message = sms.parse_message(params)
        except PayloadError as exc:
            logger.info("channels.webhook.malformed channel=sms reason=%s", exc.reason)
            return _answer("sms", "malformed", _refused(400, exc.reason))
        if message.account_sid != self.settings.twilio_account_sid:
            logger.info("channels.webhook.refused channel=sms reason=another account")
            return _answer("sms", "refused", _refused(403, "message for another Twilio account"))
        twiml = Response(EMPTY_TWIML, media_type="text/xml")
        return await self._take(self.sms.normalise(message), message.message_sid,
                                TWILIO_ACK_WITHIN_S, twiml)

    async def _take(self, message: InboundMessage, delivery_id: str, within_s: float,
                    ok: Response, retry: str | None = None) -> Response:
        """Publish a verified message once; answer ``ok`` when taken (or still in hand)."""
        channel = message.channel
        unavailable = _refused(503, "unavailable, retry later")
        if not message.text.strip():
            logger.info("channels.message.empty channel=%s message_id=%s", channel,
                        message.message_id)
            return _answer(channel, "ignored", ok)
        try:
            if not await self.records.first_delivery(channel, delivery_id):
                logger.info("channels.message.duplicate channel=%s message_id=%s retry=%s",
                            channel, delivery_id, retry)
                return _answer(channel, "duplicate", ok)
        except REDIS_UNAVAILABLE as exc:
            logger.warning("channels.message.unavailable dependency=redis error=%r", exc)
            return _answer(channel, "unavailable", unavailable)
        task = asyncio.create_task(self._publish(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        done, _ = await asyncio.wait({task}, timeout=within_s)
        if not done or task.result():
            # Taken, or still on its way (the task logs it if it then fails).
            return _answer(channel, "accepted", ok)
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await self.records.forget_delivery(channel, delivery_id)
        return _answer(channel, "unavailable", unavailable)

    async def _publish(self, message: InboundMessage) -> bool:
        """Put the message on the bus; False when it certainly is not there."""
        text = fit_text(message.text, self.settings.max_text_bytes)
        if text != message.text:
            logger.info("channels.message.truncated channel=%s message_id=%s",
                        message.channel, message.message_id)
        try:
            choices = await self.records.offered(message.keys)
        except REDIS_UNAVAILABLE:
            choices = []
        message = InboundMessage(message.channel, message.keys, message.user_id,
                                 pick_choice(text, choices), message.message_id)
        try:
            event_id, delivery = await self._ingress.publish(message)
        except Overloaded:
            logger.info("channels.message.overloaded channel=%s", message.channel)
            return False
        except REDIS_UNAVAILABLE as exc:
            logger.warning("channels.message.unavailable dependency=redis error=%r", exc)
            return False
        try:
            await delivery
        except DeliveryError as exc:
            self._ingress.in_flight.release(event_id)
            logger.warning("channels.message.unavailable dependency=kafka event_id=%s "
                           "error=%s", event_id, exc)
            return exc.possibly_written
        logger.info("channels.message.accepted channel=%s conversation_id=%s event_id=%s",
                    message.channel, message.keys.conversation_id, event_id)
        return True

