"""SMS through Twilio: its webhook in, its Messages REST API out.

In (``POST /channels/twilio/sms``, form-encoded): ``X-Twilio-Signature`` is the
base64 HMAC-SHA1, keyed with the account's auth token, of the full URL Twilio
posted to followed by every POST parameter sorted by name, each name and value
concatenated (:func:`sign`). A request without it, or with another, is refused
(403). Twilio signs the URL configured on the number, so behind a proxy that URL
must be given (``PARLEY_TWILIO_WEBHOOK_URL``).

A conversation is one pair of numbers, ours and the user's:
``sms-{our digits}-{their digits}`` (E.164 without the ``+``), so the reply's
``From`` and ``To`` are read back from the conversation id (:func:`numbers`).

Out: a reply is degraded to text (quick replies numbered, sources as footnotes)
and split into messages of at most 1600 characters, Twilio's limit for one
message body (:func:`split`): at word boundaries, numbered ``(1/3)`` when there
are several.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx

from gateway.channels.base import Channel, InboundMessage, RichReply, degrade
from gateway.channels.errors import PayloadError, SendError, SignatureError
from streams.keys import ConversationKeys

__all__ = [
    "MAX_SMS_CHARS",
    "SmsChannel",
    "SmsMessage",
    "TwilioClient",
    "numbers",
    "parse_form",
    "parse_message",
    "sign",
    "split",
    "verify",
]

NAME = "sms"
MAX_SMS_CHARS = 1600
_E164 = re.compile(r"\+?([0-9]{3,15})")
_SID = re.compile(r"[A-Za-z0-9]{10,64}")


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """The POST parameters of a form-encoded body, in order, blanks kept (Twilio signs
    empty parameters too)."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError(NAME, "the body is not a UTF-8 form") from None


def sign(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a POST to ``url`` with ``params``.

    Parameters sorted by name, then value; a name and value repeated count once, as in
    Twilio's own helper libraries."""
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(auth_token: str, url: str, params: Iterable[tuple[str, str]],
           signature: str | None) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is Twilio's for this request."""
    if not signature:
        raise SignatureError(NAME, "missing X-Twilio-Signature")
    if not hmac.compare_digest(sign(auth_token, url, params).encode(), signature.encode()):
        raise SignatureError(NAME, "bad signature")


@dataclass(frozen=True, slots=True)
class SmsMessage:
    message_sid: str
    account_sid: str
    sender: str  # the user's number, digits only
    recipient: str  # ours, digits only
    text: str


def _digits(params: Mapping[str, str], name: str) -> str:
    found = _E164.fullmatch(params.get(name, "").strip())
    if not found:
        raise PayloadError(NAME, f"missing or malformed {name!r} (an E.164 number expected)")
    return found.group(1)


def parse_message(params: Sequence[tuple[str, str]]) -> SmsMessage:
    """The message a (verified) Twilio SMS webhook carries."""
    form = dict(params)
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not _SID.fullmatch(sid):
        raise PayloadError(NAME, "missing or malformed 'MessageSid'")
    if "Body" not in form:
        raise PayloadError(NAME, "missing 'Body'")
    return SmsMessage(sid, form.get("AccountSid", ""), _digits(form, "From"),
                      _digits(form, "To"), form["Body"])


def numbers(conversation: str) -> tuple[str, str]:
    """``(our number, the user's number)``, E.164, of an SMS conversation."""
    parts = conversation.split("-")
    if len(parts) != 3 or parts[0] != NAME or not all(p.isdigit() for p in parts[1:]):
        raise PayloadError(NAME, f"not an SMS conversation: {conversation[:60]!r}")
    return f"+{parts[1]}", f"+{parts[2]}"


def split(text: str, limit: int = MAX_SMS_CHARS) -> list[str]:
    """``text`` as messages of at most ``limit`` characters, cut at whitespace (a word
    longer than a whole message is cut inside), numbered ``(i/n) `` when there are several.

    The prefix's length depends on the count, so the count is settled first: split with
    room for an ``n``-message prefix until the split needs no more than ``n``."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    count = 2
    while True:
        room = limit - len(f"({count}/{count}) ")
        if room < 1:
            raise ValueError(f"a limit of {limit} characters leaves no room for text")
        pieces = _wrap(text, room)
        if len(pieces) <= count:
            return [f"({i}/{len(pieces)}) {piece}" for i, piece in enumerate(pieces, 1)]
        count = len(pieces)


def _wrap(text: str, room: int) -> list[str]:
    pieces = []
    rest = text
    while len(rest) > room:
        cut = max(rest.rfind(" ", 0, room + 1), rest.rfind("\n", 0, room + 1))
        if cut <= 0:
            cut = room  # one word longer than a message
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


class SmsChannel(Channel[SmsMessage, list[str]]):
    """SMS to the Twilio numbers of ``tenant_id``."""

    name = NAME

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id

    def normalise(self, payload: SmsMessage) -> InboundMessage:
        keys = ConversationKeys(self.tenant_id,
                                f"{NAME}-{payload.recipient}-{payload.sender}")
        return InboundMessage(self.name, keys, f"{NAME}-{payload.sender}", payload.text,
                              payload.message_sid)

    def render(self, reply: Mapping[str, Any]) -> list[str]:
        """The message bodies to send, in order."""
        return split(degrade(RichReply.from_bot_reply(reply)))


class TwilioClient:
    """Sends SMS through Twilio's Messages API
    (``{api_url}/2010-04-01/Accounts/{sid}/Messages.json``, basic auth)."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, account_sid: str,
                 auth_token: str) -> None:
        self._http = http
        self._url = f"{api_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)

    async def send(self, sender: str, recipient: str, body: str) -> None:
        try:
            response = await self._http.post(
                self._url, data={"From": sender, "To": recipient, "Body": body},
                auth=self._auth)
        except httpx.HTTPError as exc:
            raise SendError(NAME, f"Messages API failed: {type(exc).__name__}",
                            retryable=True) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SendError(NAME, f"Messages API answered {response.status_code}",
                            retryable=True)
        if response.status_code not in (200, 201):
            try:
                detail = response.json().get("message", "")
            except (ValueError, AttributeError):
                detail = ""
            raise SendError(NAME, f"Messages API refused: {response.status_code} {detail}")
