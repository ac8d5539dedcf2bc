"""Slack: the Events API in, ``chat.postMessage`` out.

In (``POST /channels/slack/events``, gateway/channels/webhooks.py):

* every request is signed: ``X-Slack-Signature`` is ``v0=`` + the hex HMAC-SHA256,
  keyed with the app's signing secret, of ``v0:{X-Slack-Request-Timestamp}:{raw
  body}``; it is compared in constant time, and a timestamp more than five minutes
  from now is refused (a captured request cannot be replayed later);
* ``url_verification`` (sent once, when the Request URL is set) is answered with its
  challenge;
* an ``event_callback`` carrying a ``message`` event from a person becomes an
  :class:`InboundMessage`. Messages from bots (this app's own posts come back as
  events too), edits, deletions and other subtypes are ignored.

A conversation is one Slack channel or direct-message channel, or one thread in it:
``slack-{team}-{channel}`` or ``slack-{team}-{channel}-{thread_ts}``. Slack's ids are
upper-case letters and digits and ``ts`` digits and a dot, so these are valid
Parley ids, and the reply's destination is read back from the conversation id
(:func:`destination`): nothing needs to be stored to answer.

Out: :meth:`SlackChannel.render` gives the ``chat.postMessage`` body (mrkdwn text,
quick replies as a numbered list, sources as footnote links), and
:class:`SlackClient` posts it with the bot token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.channels.base import Channel, InboundMessage, RichReply, degrade
from gateway.channels.errors import PayloadError, SendError, SignatureError
from streams.keys import ConversationKeys

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "SlackChannel",
    "SlackClient",
    "SlackMessage",
    "UrlVerification",
    "destination",
    "parse_event",
    "sign",
    "verify",
]

NAME = "slack"
MAX_CLOCK_SKEW_S = 5 * 60
_SLACK_ID = re.compile(r"[A-Z0-9]{1,40}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,8}")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request (what ``X-Slack-Signature`` must hold)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes,
           now: float) -> None:
    """Raise :class:`SignatureError` unless the request is signed with ``secret`` within
    the last five minutes (``now``: Unix seconds)."""
    if not timestamp or not signature:
        raise SignatureError(NAME, "missing X-Slack-Signature or X-Slack-Request-Timestamp")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError(NAME, "malformed X-Slack-Request-Timestamp") from None
    if abs(now - sent) > MAX_CLOCK_SKEW_S:
        raise SignatureError(NAME, "request timestamp more than 5 minutes from now")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode()):
        raise SignatureError(NAME, "bad signature")


@dataclass(frozen=True, slots=True)
class UrlVerification:
    challenge: str


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A person's message, from an ``event_callback`` payload."""

    event_id: str
    team_id: str
    channel_id: str
    user_id: str
    text: str
    thread_ts: str  # "" outside a thread


def _field(data: Mapping[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or (pattern and not pattern.fullmatch(value)):
        raise PayloadError(NAME, f"missing or malformed {name!r}")
    return value


def parse_event(body: bytes) -> UrlVerification | SlackMessage | None:
    """What a (verified) Events API request carries; ``None``: nothing to answer.

    Raises :class:`PayloadError` for a body that is not an Events API payload."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError(NAME, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError(NAME, "the body is not a JSON object")
    kind = data.get("type")
    if kind == "url_verification":
        return UrlVerification(_field(data, "challenge"))
    if kind != "event_callback":
        return None  # app_rate_limited and future types: acknowledged, nothing to do
    event = data.get("event")
    if not isinstance(event, dict):
        raise PayloadError(NAME, "event_callback without an event")
    if event.get("type") != "message" or event.get("subtype") or event.get("bot_id"):
        return None  # edits, joins, bot posts (this app's own replies among them)
    own = {a.get("user_id") for a in data.get("authorizations") or ()
           if isinstance(a, dict) and a.get("is_bot")}
    if event.get("user") in own:
        return None
    text = event.get("text")
    if not isinstance(text, str):
        raise PayloadError(NAME, "message event without text")
    thread = event.get("thread_ts") or ""
    if thread and not (isinstance(thread, str) and _TS.fullmatch(thread)):
        raise PayloadError(NAME, "malformed 'thread_ts'")
    return SlackMessage(
        event_id=_field(data, "event_id", re.compile(r"[A-Za-z0-9]{1,64}")),
        team_id=_field(data, "team_id", _SLACK_ID),
        channel_id=_field(event, "channel", _SLACK_ID),
        user_id=_field(event, "user", _SLACK_ID),
        text=text,
        thread_ts=thread,
    )


def conversation_id(team_id: str, channel_id: str, thread_ts: str = "") -> str:
    base = f"{NAME}-{team_id}-{channel_id}"
    return f"{base}-{thread_ts}" if thread_ts else base


def destination(conversation: str) -> tuple[str, str]:
    """``(channel id, thread_ts or "")`` a conversation's replies are posted to.

    Raises :class:`PayloadError` for a conversation id this channel did not make."""
    parts = conversation.split("-")
    if parts[0] != NAME or len(parts) not in (3, 4) or not _SLACK_ID.fullmatch(parts[2]):
        raise PayloadError(NAME, f"not a Slack conversation: {conversation[:60]!r}")
    return parts[2], parts[3] if len(parts) == 4 else ""


def mrkdwn_escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs require."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_unescape(text: str) -> str:
    """What the user typed: Slack sends ``&``, ``<`` and ``>`` escaped."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mrkdwn_link(url: str, label: str) -> str:
    return f"<{url}|{label}>"


class SlackChannel(Channel[SlackMessage, dict[str, Any]]):
    """Slack messages of one workspace's app, for ``tenant_id``."""

    name = NAME

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id

    def normalise(self, payload: SlackMessage) -> InboundMessage:
        keys = ConversationKeys(self.tenant_id, conversation_id(
            payload.team_id, payload.channel_id, payload.thread_ts))
        return InboundMessage(self.name, keys, f"{NAME}-{payload.team_id}-{payload.user_id}",
                              mrkdwn_unescape(payload.text), payload.event_id)

    def render(self, reply: Mapping[str, Any]) -> dict[str, Any]:
        """The ``chat.postMessage`` arguments for a reply."""
        channel, thread = destination(reply["conversation_id"])
        rich = RichReply.from_bot_reply(reply)
        escaped = RichReply(mrkdwn_escape(rich.text),
                            tuple(mrkdwn_escape(q) for q in rich.quick_replies),
                            rich.cards, tuple(mrkdwn_escape(s) for s in rich.sources))
        body: dict[str, Any] = {"channel": channel, "text": degrade(escaped, mrkdwn_link)}
        if thread:
            body["thread_ts"] = thread
        return body


class SlackClient:
    """Posts messages through Slack's Web API (``{api_url}/chat.postMessage``).

    Slack answers HTTP 200 with ``{"ok": false, "error": ...}`` for a refused call: that
    is a :class:`SendError` too. 429 and 5xx are retryable (the caller retries)."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, bot_token: str) -> None:
        self._http = http
        self._url = api_url.rstrip("/") + "/chat.postMessage"
        self._headers = {"Authorization": f"Bearer {bot_token}"}

    async def post_message(self, body: Mapping[str, Any]) -> None:
        try:
            response = await self._http.post(self._url, json=dict(body), headers=self._headers)
        except httpx.HTTPError as exc:
            raise SendError(NAME, f"chat.postMessage failed: {type(exc).__name__}",
                            retryable=True) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SendError(NAME, f"chat.postMessage answered {response.status_code}",
                            retryable=True)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SendError(NAME, f"chat.postMessage refused: {response.status_code} "
                            f"{error or 'no error given'}")
