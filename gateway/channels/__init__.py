"""Channels: the web chat, Slack and SMS as adapters of one interface.

``base`` holds the interface (:class:`Channel`: normalise in, render out) and the
degradation of rich replies to text; ``web``, ``slack`` and ``sms`` the adapters;
``service`` their webhooks (mounted on the gateway's API port, gateway/api.py) and
``delivery`` the consumer-group delivery of their replies. docs/channels.md tells
how to set up a Slack app and a Twilio number.
"""

from gateway.channels.base import (
    Card,
    Channel,
    InboundMessage,
    RichReply,
    chat_message,
    degrade,
    pick_choice,
)
from gateway.channels.delivery import ChannelDelivery, ReplyDispatcher, Sender
from gateway.channels.errors import (
    ChannelError,
    Overloaded,
    PayloadError,
    SendError,
    SignatureError,
)
from gateway.channels.ingress import ChannelRecords, Ingress
from gateway.channels.service import Channels
from gateway.channels.slack import SlackChannel
from gateway.channels.sms import SmsChannel
from gateway.channels.web import WebChannel

__all__ = [
    "Card",
    "Channel",
    "ChannelDelivery",
    "ChannelError",
    "ChannelRecords",
    "Channels",
    "InboundMessage",
    "Ingress",
    "Overloaded",
    "PayloadError",
    "ReplyDispatcher",
    "RichReply",
    "SendError",
    "Sender",
    "SignatureError",
    "SlackChannel",
    "SmsChannel",
    "WebChannel",
    "chat_message",
    "degrade",
    "pick_choice",
]
