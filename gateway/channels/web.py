"""The web channel (the chat page over ``/ws``) expressed as a channel adapter.

Frames are already what the web page shows, so nothing degrades: a message frame
becomes an :class:`InboundMessage` with channel ``ws`` (the value the gateway has
always written), and a ``BotReply`` becomes the ``reply`` frame of
docs/protocol.md, quick replies and sources included. The socket handling stays
in gateway/server.py, tuned for 10,000 sockets; this is the adapter's view of the
same conversion, so every channel goes through one interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth import Principal
from gateway.channels.base import Channel, InboundMessage
from gateway.protocol import MessageFrame, reply_frame
from streams.keys import ConversationKeys

__all__ = ["WebChannel", "WebMessage"]


@dataclass(frozen=True, slots=True)
class WebMessage:
    """A message frame, with who sent it on which conversation (from the connection)."""

    keys: ConversationKeys
    principal: Principal
    frame: MessageFrame


class WebChannel(Channel[WebMessage, str]):
    name = "ws"

    def normalise(self, payload: WebMessage) -> InboundMessage:
        principal = payload.principal
        return InboundMessage(self.name, payload.keys, principal.user_id, payload.frame.text,
                              payload.frame.client_msg_id, principal.tier,
                              tuple(principal.roles))

    def render(self, reply: Mapping[str, Any]) -> str:
        """The ``reply`` frame (JSON text)."""
        return reply_frame(dict(reply))
