"""One chat connection's state, free of I/O: replies in, frames to send out.

What a socket must remember lives here rather than in the asyncio code, as
websockets keeps its protocol (``protocol.py``) apart from its connections: which
reply ``seq`` the client already has (each reply is written once per socket, although
the bus may deliver one twice and a resume may race a live reply), and the live replies
that arrive while missed ones are read from the outbox (held, then sent in ``seq``
order with them). Tests drive it without sockets (tests/unit/test_session.py).

The I/O layer (gateway/server.py) calls, without awaiting anything in between:

* :meth:`ChatSession.begin_replay` when the client connects with ``last_seq`` or sends
  ``resume``: the ``seq`` after which to read the outbox;
* :meth:`ChatSession.end_replay` with what the outbox held (or nothing, if it could not
  be read): the frames to send;
* :meth:`ChatSession.on_replies` with live replies from the bus: the frames to send.

Every frame returned is to be sent in the order returned; ``seq`` strictly increases
over all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.protocol import reply_frame

__all__ = ["ChatSession"]

Reply = dict[str, Any]


class ChatSession:
    """Replay, dedup by ``seq`` and the pending queue of one socket."""

    __slots__ = ("delivered_seq", "duplicates", "pending", "replaying", "with_state")

    def __init__(self, *, with_state: bool = False) -> None:
        #: Replies show the dialogue state they carry: only a bot tester's connection that
        #: asked for it (``debug=1``; streams/turn_state.py).
        self.with_state = with_state
        self.delivered_seq = 0  # the highest reply seq the client has
        self.replaying = 0  # replays under way (a resume may come during a replay)
        self.duplicates = 0  # replies not sent because the client had them
        # Made on first use: most of 10,000 idle sessions never need it.
        self.pending: list[Reply] | None = None  # live replies held during a replay

    def begin_replay(self, last_seq: int) -> int:
        """The client has every reply up to ``last_seq``: read the outbox after the
        returned ``seq``; live replies are held until :meth:`end_replay`."""
        self.replaying += 1
        self.delivered_seq = max(self.delivered_seq, last_seq)
        return self.delivered_seq

    def end_replay(self, stored: Iterable[Reply]) -> list[str]:
        """The replies read from the outbox (none if it could not be read), merged with
        the live ones held meanwhile: the frames to send, in ``seq`` order."""
        self.replaying = max(0, self.replaying - 1)
        if self.replaying:  # another replay is under way: it sends everything at its end
            if self.pending is None:
                self.pending = []
            self.pending.extend(stored)
            return []
        held, self.pending = self.pending or [], None
        return self._frames(sorted([*stored, *held], key=lambda r: int(r["seq"])))

    def on_replies(self, replies: Iterable[Reply]) -> list[str]:
        """Live replies for this conversation, in ``seq`` order: the frames to send now."""
        if self.replaying:
            if self.pending is None:
                self.pending = []
            self.pending.extend(replies)
            return []
        return self._frames(replies)

    def _frames(self, replies: Iterable[Reply]) -> list[str]:
        frames = []
        for reply in replies:
            seq = int(reply["seq"])
            if seq <= self.delivered_seq:
                self.duplicates += 1
                continue
            self.delivered_seq = seq
            frames.append(reply_frame(reply, with_state=self.with_state))
        return frames
