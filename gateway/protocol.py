"""The client frame protocol, free of I/O (see docs/protocol.md).

Client → server frames are JSON objects with a ``type``:

* ``message``  ``{"type": "message", "text": "...", "client_msg_id": "..."}``
* ``resume``   ``{"type": "resume", "last_seq": 12}``  replay replies after seq 12
* ``typing``   ``{"type": "typing"}``                   accepted, not forwarded yet
* ``ping``     ``{"type": "ping"}``                     answered with ``pong``

Server → client frames: ``welcome``, ``ack``, ``reply``, ``error``, ``pong``.

:func:`parse_connection_params` reads what a ``/ws?...`` URL asks for (conversation,
``last_seq``, ``debug``; who asks comes from credentials, gateway/auth.py); a bad value
is refused.
:func:`parse_client_frame` turns raw frame data into a frame object or raises
:class:`FrameError` with a stable ``code`` the client can act on; the caller
answers with :func:`error_frame` and the connection stays usable.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from kernel.errors import ParleyError
from streams.keys import validate_id
from streams.turn_state import read_turn_debug

__all__ = [
    "ClientFrame",
    "ConnectionParams",
    "FrameError",
    "MessageFrame",
    "PingFrame",
    "ResumeFrame",
    "TypingFrame",
    "ack_frame",
    "encode",
    "error_frame",
    "frame_limit",
    "parse_client_frame",
    "parse_connection_params",
    "reply_frame",
    "welcome_frame",
]

MAX_CLIENT_MSG_ID = 128
#: The largest sequence number a client may name (Redis scores and Avro longs hold it).
MAX_SEQ = 2**63 - 1


class FrameError(ParleyError):
    """A client frame Parley cannot accept; ``code`` is part of the protocol."""

    def __init__(self, code: str, message: str, client_msg_id: str | None = None) -> None:
        super().__init__(code, message)
        self.code, self.message, self.client_msg_id = code, message, client_msg_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class MessageFrame:
    text: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class ResumeFrame:
    last_seq: int


@dataclass(frozen=True, slots=True)
class TypingFrame:
    pass


@dataclass(frozen=True, slots=True)
class PingFrame:
    pass


ClientFrame = MessageFrame | ResumeFrame | TypingFrame | PingFrame


class ConnectionParams(NamedTuple):
    """What a ``/ws?...`` URL asks for. Who asks is not among it: the tenant and user come
    from verified credentials only (gateway/auth.py)."""

    conversation_id: str
    last_seq: int  # replay the replies after it; -1: no replay
    #: ``debug=1``: show each turn's dialogue state, if the credentials hold the
    #: bot_tester role (streams/turn_state.py); without it the replies come without it.
    debug: bool = False


def parse_connection_params(path: str) -> ConnectionParams:
    """The conversation and ``last_seq`` a ``/ws?...`` URL asks for (defaults: a new
    conversation, no replay). Raises ``InvalidIdError`` (a ``ValueError``) for a bad id
    and ``ValueError`` for a bad ``last_seq`` or ``debug`` (``0`` or ``1``)."""
    query = parse_qs(urlsplit(path).query)

    def param(name: str, default: str) -> str:
        return query.get(name, [default])[0]

    conversation = validate_id("conversation id",
                               param("conversation", f"c-{uuid.uuid4().hex}"))
    last_seq = param("last_seq", "-1")
    if not re.fullmatch(r"-?[0-9]{1,18}", last_seq):
        raise ValueError(f"last_seq must be a whole number, not {last_seq[:40]!r}")
    debug = param("debug", "0")
    if debug not in ("0", "1"):
        raise ValueError(f"debug must be 0 or 1, not {debug[:40]!r}")
    return ConnectionParams(conversation, int(last_seq), debug == "1")


def frame_limit(max_text_bytes: int) -> int:
    """The most characters a client frame may have before it is parsed at all.

    It bounds what parsing costs, and must let through every frame whose text is within
    ``max_text_bytes`` UTF-8 bytes however it is written: the widest form is ``\\u0041``,
    6 characters for 1 byte, and ``\\ud83d\\ude00`` is 12 for 4. The ``client_msg_id``
    (128 characters, 6 each escaped) and the rest of the object fit in 4 KiB more.
    """
    return 6 * max_text_bytes + 4096


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_decode_json = json.JSONDecoder(parse_constant=_refuse_constant).decode


def parse_client_frame(data: str | bytes, max_text_bytes: int) -> ClientFrame:
    """Parse one client frame; raise :class:`FrameError` for anything unacceptable, and
    nothing else whatever the input (tests/unit/test_protocol_fuzz.py)."""
    if len(data) > frame_limit(max_text_bytes):
        raise FrameError("too_large", f"frame of {len(data)} bytes exceeds the limit")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:  # a binary frame; JSON would guess UTF-16 or -32
        raise FrameError("bad_json", f"frame is not UTF-8: {exc.reason} at byte {exc.start}")\
            from None
    try:
        obj = _decode_json(text)
    except RecursionError:
        raise FrameError("bad_json", "frame is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError; NaN/Infinity; an integer of > 4,300 digits
        raise FrameError("bad_json", f"frame is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    kind = obj.get("type")
    if kind == "message":
        return _parse_message(obj, max_text_bytes)
    if kind == "resume":
        last_seq = obj.get("last_seq", 0)
        if (not isinstance(last_seq, int) or isinstance(last_seq, bool)
                or not 0 <= last_seq <= MAX_SEQ):
            raise FrameError("bad_frame", "resume.last_seq must be a whole number from 0 to "
                             f"{MAX_SEQ}")
        return ResumeFrame(last_seq)
    if kind == "typing":
        return TypingFrame()
    if kind == "ping":
        return PingFrame()
    shown = repr(kind[:40]) if isinstance(kind, str) else f"of JSON type {_json_type(kind)}"
    raise FrameError("unknown_type", f"unknown frame type {shown}")


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), "value")


def _parse_message(obj: dict[str, Any], max_text_bytes: int) -> MessageFrame:
    client_msg_id = obj.get("client_msg_id")
    if not isinstance(client_msg_id, str) or not 0 < len(client_msg_id) <= MAX_CLIENT_MSG_ID:
        raise FrameError("bad_frame", "message.client_msg_id must be a string of 1-128 chars")
    if _has_surrogates(client_msg_id):  # it is echoed back, and could not be sent
        raise FrameError("bad_frame", "message.client_msg_id must not hold lone surrogates")
    text = obj.get("text")
    if not isinstance(text, str):
        raise FrameError("bad_frame", "message.text must be a string", client_msg_id)
    if not text.strip():
        raise FrameError("empty_text", "message.text is empty", client_msg_id)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_text_bytes:
        raise FrameError(
            "too_large", f"message.text is {size} bytes; the limit is {max_text_bytes}",
            client_msg_id,
        )  # fmt: skip
    # Lone surrogates cannot be encoded to UTF-8 on the bus; replace them.
    text = text.encode("utf-8", "replace").decode("utf-8") if _has_surrogates(text) else text
    return MessageFrame(text, client_msg_id)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ``json.dumps`` with options builds an encoder on every call; frames share one.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(frame: dict[str, Any]) -> str:
    return _encode_json(frame)


def welcome_frame(tenant_id: str, user_id: str, conversation_id: str, gateway: str, *,
                  branding: dict[str, Any] | None = None,
                  max_text_bytes: int | None = None,
                  level: int | None = None) -> str:
    """The first frame on a socket. ``branding`` is the tenant's (name, colour, greeting,
    suggestions). ``max_text_bytes``, when given, tells the client the UTF-8 size limit of
    a message's text, so a chat page can count against it instead of learning it from a
    ``too_large`` error. ``level``, when known, is the tenant's degradation level
    (``degradation_level``: 1 full … 4 maintenance, docs/operations.md)."""
    frame: dict[str, Any] = {
        "type": "welcome", "tenant_id": tenant_id, "user_id": user_id,
        "conversation_id": conversation_id, "gateway": gateway,
    }  # fmt: skip
    if max_text_bytes is not None:
        frame["max_text_bytes"] = max_text_bytes
    if branding is not None:
        frame["branding"] = branding
    if level is not None:
        frame["degradation_level"] = level
    return encode(frame)


def ack_frame(client_msg_id: str, event_id: str, seq: int) -> str:
    return encode({"type": "ack", "client_msg_id": client_msg_id, "event_id": event_id, "seq": seq})


def reply_frame(reply: dict[str, Any], *, with_state: bool = False) -> str:
    """A BotReply as a ``reply`` frame; ``turn_end`` when it is the turn's last reply, and
    with ``with_state`` (a bot tester who asked: gateway/server.py) the dialogue ``state``
    after the turn and the reply's ``utterances`` when it carries them
    (streams/turn_state.py)."""
    payload = reply["payload"]
    frame: dict[str, Any] = {
        "type": "reply",
        "text": payload["text"],
        "in_reply_to": payload["client_msg_id"],
        "event_id": reply["event_id"],
        "seq": reply["seq"],
        "sender": payload.get("sender", "bot"),
    }
    if payload.get("quick_replies"):
        frame["quick_replies"] = payload["quick_replies"]
    if payload.get("sources"):
        frame["sources"] = payload["sources"]
    if payload.get("response"):
        frame["response"] = payload["response"]
    if payload.get("agent_id"):
        frame["agent_id"] = payload["agent_id"]
    if payload.get("turn_end"):
        frame["turn_end"] = True
    if with_state and (debug := read_turn_debug(payload.get("debug_json") or "")) is not None:
        frame["state"] = debug.state
        frame["utterances"] = debug.utterances
    return encode(frame)


def error_frame(code: str, message: str, client_msg_id: str | None = None, *,
                retry_after: float | None = None) -> str:
    """An ``error`` frame; ``retry_after``: seconds before the same message may succeed."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_msg_id is not None:
        frame["client_msg_id"] = client_msg_id
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return encode(frame)
