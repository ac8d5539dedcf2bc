"""The channel-adapter interface, and how rich replies degrade to plain text.

A channel (the web chat, Slack, SMS) is an adapter with two halves, after Rasa's
``InputChannel``/``OutputChannel``:

* in: :meth:`Channel.normalise` turns what the channel sent (a frame, an Events
  API payload, a Twilio form) into an :class:`InboundMessage`: tenant, user,
  conversation and text, which becomes a ``ChatMessage`` on ``chat.inbound``
  (:func:`chat_message`) through the same path for every channel;
* out: :meth:`Channel.render` turns a ``BotReply`` into what the channel can show.

A reply is richer than most channels: quick replies (buttons on the web page),
cards, cited sources. Channels that show text only get it degraded by
:func:`degrade`: quick replies become a numbered list (:func:`pick_choice` maps
a bare number the user sends back to the choice), cards become a few lines of
text, and sources become footnote links. Everything here is pure: adapters are
tested without sockets or HTTP.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from streams.keys import ConversationKeys, validate_id

__all__ = [
    "Card",
    "Channel",
    "InboundMessage",
    "RichReply",
    "chat_message",
    "degrade",
    "fit_text",
    "pick_choice",
    "plain_link",
]

P = TypeVar("P")  # what the channel sends in
R = TypeVar("R")  # what a reply becomes for the channel


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A user's message from any channel, before it has an event id and a sequence.

    ``message_id`` is the channel's own id for the message (a frame's ``client_msg_id``,
    Slack's ``event_id``, Twilio's ``MessageSid``): it travels as ``client_msg_id`` and
    comes back in the reply's ``in_reply_to``.
    """

    channel: str
    keys: ConversationKeys
    user_id: str
    text: str
    message_id: str
    #: From verified credentials (the web channel's Principal); a webhook channel's users
    #: are the channel tenant's, at the lowest tier and with no roles.
    tier: str = "default"
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_id("user id", self.user_id)


def chat_message(message: InboundMessage, event_id: str, seq: int, reply_route: str,
                 timestamp_ms: int) -> dict[str, Any]:
    """The ``ChatMessage`` (schemas/chat_message.avsc) a message becomes on ``chat.inbound``."""
    return {
        "event_id": event_id,
        "tenant_id": message.keys.tenant_id,
        "conversation_id": message.keys.conversation_id,
        "user_id": message.user_id,
        "channel": message.channel,
        "seq": seq,
        "timestamp": timestamp_ms,
        "trace_id": event_id,
        "reply_route": reply_route,
        "payload": {"text": message.text, "client_msg_id": message.message_id, "locale": None,
                    "tier": message.tier, "roles": sorted(message.roles)},
    }


@dataclass(frozen=True, slots=True)
class Card:
    """A titled block with an optional link (not in ``BotReply`` yet: ready for it)."""

    title: str
    text: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class RichReply:
    """What a reply says, whatever the channel: text, choices, cards, cited sources."""

    text: str
    quick_replies: tuple[str, ...] = ()
    cards: tuple[Card, ...] = ()
    sources: tuple[str, ...] = ()

    @classmethod
    def from_bot_reply(cls, reply: Mapping[str, Any]) -> RichReply:
        payload = reply["payload"]
        cards = tuple(Card(c.get("title", ""), c.get("text", ""), c.get("url", ""))
                      for c in payload.get("cards") or ())
        return cls(payload["text"], tuple(payload.get("quick_replies") or ()), cards,
                   tuple(payload.get("sources") or ()))


def plain_link(url: str, label: str) -> str:
    """A link for a channel without markup: the address itself (SMS apps make it tappable)."""
    return url


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def degrade(reply: RichReply, link: Callable[[str, str], str] = plain_link) -> str:
    """The reply as text only: its text, cards as lines, quick replies as a numbered
    list, and sources as numbered footnotes (``[1] …``; a source that is a URL is
    written with ``link(url, label)``, the channel's link syntax).

    >>> degrade(RichReply("Pick one", ("Yes", "No"), sources=("faq",)))
    'Pick one\\n\\n1. Yes\\n2. No\\n(reply with a number)\\n\\n[1] faq'
    """
    parts = [reply.text] if reply.text else []
    for card in reply.cards:
        lines = [card.title, card.text, link(card.url, card.title) if card.url else ""]
        parts.append("\n".join(line for line in lines if line))
    if reply.quick_replies:
        numbered = [f"{i}. {choice}" for i, choice in enumerate(reply.quick_replies, 1)]
        parts.append("\n".join([*numbered, "(reply with a number)"]))
    if reply.sources:
        notes = [f"[{i}] {link(s, f'[{i}]') if _is_url(s) else s}"
                 for i, s in enumerate(reply.sources, 1)]
        parts.append("\n".join(notes))
    return "\n\n".join(parts)


_NUMBER = re.compile(r"\s*(\d{1,3})\s*[.)]?\s*")


def pick_choice(text: str, choices: Sequence[str]) -> str:
    """What a user meant by ``text`` after being offered ``choices`` as a numbered list:
    the choice when the text is just its number (``2``, ``2.``, ``2)``), else the text."""
    found = _NUMBER.fullmatch(text)
    if found and 1 <= int(found.group(1)) <= len(choices):
        return choices[int(found.group(1)) - 1]
    return text


def fit_text(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, at a character boundary.

    Webhooks cannot refuse a message the way a frame is refused (the user would never
    see why): an overlong one is cut to the gateway's limit, and the cut is logged."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


class Channel(abc.ABC, Generic[P, R]):
    """A channel adapter: ``normalise`` what comes in, ``render`` what goes out.

    ``normalise`` returns ``None`` for something that is not a user's message (a bot's
    own post, an edit, a delivery receipt) and raises
    :class:`~gateway.channels.errors.PayloadError` for something malformed. The
    ``BotReply`` given to ``render`` is the decoded Avro record.
    """

    #: The ``channel`` field of the events it makes (``ChatMessage``, and so ``BotReply``).
    name: ClassVar[str]

    @abc.abstractmethod
    def normalise(self, payload: P) -> InboundMessage | None: ...

    @abc.abstractmethod
    def render(self, reply: Mapping[str, Any]) -> R: ...
