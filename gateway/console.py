"""The agent console on the gateway's API port: a page, JSON commands and a live feed.

A thin HTTP layer over :class:`~gateway.handoff_desk.HandoffDesk` (the commands, checked
in Redis and published to ``handoff.events``) and :class:`~gateway.handoff_desk.HandoffFeed`
(the tenant's events, live), mounted on the API app (gateway/api.py) by the gateway::

    GET  /console                                   the page (gateway/static/console.html)
    GET  /console/api/queue                         waiting and held conversations
    POST /console/api/conversations/{id}/claim      take a waiting one
    POST /console/api/conversations/{id}/send       {"text": ...} to the user
    POST /console/api/conversations/{id}/note       {"text": ...} kept with the conversation
    POST /console/api/conversations/{id}/release    {"slots": {...}} optional: back to the bot
    POST /console/api/conversations/{id}/close      end the session
    GET  /console/api/events                        server-sent events of the tenant's handoffs

Who may use it: a person whose JWT (gateway/auth.py) carries the role ``agent``; the
tenant and the agent id come from the verified token only, so an agent acts in its own
tenant and another tenant's conversations do not exist for it (404). JSON calls take the
token in ``Authorization: Bearer`` only (a token in a URL ends up in logs and history);
the live feed also takes ``?token=``, because a browser's ``EventSource`` cannot set
headers (the page keeps the token in sessionStorage, as the chat page does).

No CSRF protection is needed: nothing here reads a cookie or any ambient credential. A
forged cross-site request carries no bearer token (a page of another origin cannot read
this page's sessionStorage), so it is refused with 401 like any anonymous call; and the
API sends no CORS headers, so another origin cannot read the answers either.

Answers: 401 (no or bad token), 403 (no ``agent`` role), 404 (no handoff of this
conversation in the agent's tenant), 409 with the desk's ``code`` (``not_waiting``:
another agent was first; ``not_holder``), 400 (bad JSON, text or slots, ids), 413 (body
too large), 503 (Redis or the broker unavailable). Every error body is
``{"error": code, "reason": text}``.

Server-sent events rather than a WebSocket: the feed only goes one way, ``EventSource``
reconnects by itself (the page then reloads the queue, so nothing missed stays missed),
and it is plain HTTP on the Starlette app that already serves this port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.auth import Authenticator, AuthError, Credentials, Principal, credentials_from
from gateway.handoff_desk import HandoffDesk, HandoffFeed, HandoffRefused
from kernel.errors import ParleyError
from streams.handoff import HandoffRecord, TranscriptLine
from streams.keys import InvalidIdError, validate_id
from streams.state import REDIS_UNAVAILABLE

__all__ = ["AGENT_ROLE", "FEED_BACKLOG", "MAX_BODY_BYTES", "Agent", "Console", "ConsoleError",
           "agent_of", "event_json", "parse_command_body", "record_json", "sse_frame",
           "token_expiry"]

logger = logging.getLogger(__name__)

#: The role a token must carry to use the console.
AGENT_ROLE = "agent"
#: The largest JSON body a command may have (a message is at most 4,000 characters).
MAX_BODY_BYTES = 64 * 1024
#: A comment line on an idle feed this often: proxies keep it open, dead peers show up.
HEARTBEAT_S = 15.0
#: Events a slow feed reader may have pending before its stream is ended (the page
#: reconnects and reloads the queue).
FEED_BACKLOG = 1000
#: How long a browser waits before reconnecting a feed that ended (``retry:``), in ms.
RECONNECT_MS = 2000

PAGE = Path(__file__).resolve().parent / "static" / "console.html"
_COMMANDS = ("claim", "send", "note", "release", "close")
#: Desk refusals and the HTTP status each answers with.
_REFUSAL_STATUS = {"not_waiting": 409, "not_holder": 409, "invalid": 400, "unavailable": 503}
#: Event fields the page gets (the rest are internal: event ids, reply routing).
_EVENT_FIELDS = ("type", "conversation_id", "request_id", "user_id", "agent_id", "text",
                 "reason", "channel", "timestamp")


class ConsoleError(ParleyError):
    """A console request refused: ``status`` (HTTP), ``code`` (machine-readable) and
    ``reason`` (for the person)."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(status, code, reason)
        self.status, self.code, self.reason = status, code, reason

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.reason}"

    def response(self) -> JSONResponse:
        return _error(self.status, self.code, self.reason)


@dataclass(frozen=True, slots=True)
class Agent:
    """A signed-in agent: its tenant and id come from the verified token."""

    tenant_id: str
    agent_id: str
    #: When the token stops being accepted (its ``exp`` plus the gateway's leeway, seconds
    #: since the epoch): a live feed ends then, and its page signs in again.
    valid_until: float = float("inf")


def agent_of(principal: Principal, valid_until: float = float("inf")) -> Agent:
    """The agent a principal is, or :class:`ConsoleError` 403 without the agent role."""
    if AGENT_ROLE not in principal.roles:
        raise ConsoleError(403, "forbidden", f"the console needs the {AGENT_ROLE!r} role; "
                           "this token does not carry it")
    return Agent(principal.tenant_id, principal.user_id, valid_until)


def token_expiry(token: str) -> float:
    """A verified token's ``exp`` (inf if it has none: the authenticator requires one)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return float("inf")
    return float(exp) if isinstance(exp, int | float) else float("inf")


def line_json(line: TranscriptLine) -> dict[str, Any]:
    return {"id": line.id, "role": line.role, "text": line.text, "agent_id": line.agent_id,
            "at_ms": line.at_ms}


def record_json(record: HandoffRecord) -> dict[str, Any]:
    """What the page gets of a handoff request."""
    return {"conversation_id": record.conversation_id, "request_id": record.request_id,
            "user_id": record.user_id, "channel": record.channel, "reason": record.reason,
            "slots": dict(record.slots), "requested_ms": record.requested_ms,
            "agent_id": record.agent_id, "claimed_ms": record.claimed_ms,
            "transcript": [line_json(line) for line in record.transcript]}


def event_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the page gets of a ``handoff.events`` event (its slots decoded)."""
    out = {name: event.get(name) for name in _EVENT_FIELDS}
    stamp = out["timestamp"]
    if isinstance(stamp, datetime):  # the codec decodes timestamp-millis to a datetime
        out["timestamp"] = int(stamp.timestamp() * 1000)
    try:
        slots = json.loads(event.get("slots_json") or "{}")
    except json.JSONDecodeError:
        slots = {}
    out["slots"] = slots if isinstance(slots, dict) else {}
    return out


def sse_frame(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event (JSON on one ``data:`` line: json.dumps escapes newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()


def parse_command_body(raw: bytes, command: str) -> dict[str, Any]:
    """The JSON object a command sent (``{}`` for an empty body), checked for its command:
    ``send``/``note`` need ``text``; ``release`` may have ``slots`` (an object)."""
    if raw.strip():
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConsoleError(400, "invalid", f"the body is not JSON: {exc}") from exc
    else:
        body = {}
    if not isinstance(body, dict):
        raise ConsoleError(400, "invalid", "the body must be a JSON object")
    if command in ("send", "note") and not isinstance(body.get("text"), str):
        raise ConsoleError(400, "invalid", f"{command} needs {{\"text\": \"...\"}}")
    if command == "release" and body.get("slots") is not None \
            and not isinstance(body["slots"], dict):
        raise ConsoleError(400, "invalid", "slots must be a JSON object of slot name to value")
    return body


def _error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _ok(body: Mapping[str, Any]) -> JSONResponse:
    return JSONResponse(dict(body), headers={"Cache-Control": "no-store"})


Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The console's routes for one gateway (``routes``), and its live feeds (``close``)."""

    def __init__(self, auth: Authenticator, desk: HandoffDesk, feed: HandoffFeed, *,
                 clock: Callable[[], float] = time.time,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self._auth = auth
        self._desk = desk
        self._feed = feed
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._closing = asyncio.Event()
        self.streams = 0  # open live feeds (tests, logs)

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/console", self._page, methods=["GET"]),
            Route("/console/api/queue", self._guarded(self._queue), methods=["GET"]),
            Route("/console/api/events", self._guarded(self._events, query_token=True),
                  methods=["GET"]),
            Route("/console/api/conversations/{conversation_id}/{command}",
                  self._guarded(self._command), methods=["POST"]),
        ]

    async def close(self) -> None:
        """End every live feed (the server stops next); idempotent."""
        self._closing.set()

    # -- the handlers -------------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        # The page holds nothing secret: what it shows comes from the API, with a token.
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'; frame-ancestors 'none'"})

    async def _queue(self, request: Request, agent: Agent) -> Response:
        queue = await self._desk.queue(agent.tenant_id, agent.agent_id)
        return _ok({"tenant": agent.tenant_id, "agent": agent.agent_id,
                    "now_ms": int(self._clock() * 1000),
                    "waiting": [record_json(r) for r in queue.waiting],
                    "held": [record_json(r) for r in queue.held]})

    async def _command(self, request: Request, agent: Agent) -> Response:
        command = request.path_params["command"]
        if command not in _COMMANDS:
            raise ConsoleError(404, "not_found", f"no command {command[:40]!r}: one of "
                               + ", ".join(_COMMANDS))
        conversation = request.path_params["conversation_id"]
        validate_id("conversation id", conversation)
        body = parse_command_body(await _read_body(request), command)
        if await self._desk.record(agent.tenant_id, conversation) is None:
            raise ConsoleError(404, "not_found", f"no handoff of conversation "
                               f"{conversation!r} in tenant {agent.tenant_id!r}")
        tenant, who, desk = agent.tenant_id, agent.agent_id, self._desk
        match command:
            case "claim":
                record = await desk.claim(tenant, who, conversation)
                return _ok({"claimed": record_json(record)})
            case "send":
                await desk.send(tenant, who, conversation, body["text"])
            case "note":
                await desk.note(tenant, who, conversation, body["text"])
            case "release":
                await desk.release(tenant, who, conversation, slots=body.get("slots") or {})
            case "close":
                await desk.close(tenant, who, conversation)
        return _ok({"ok": True, "command": command, "conversation_id": conversation})

    async def _events(self, request: Request, agent: Agent) -> Response:
        return StreamingResponse(self._stream(agent), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def _stream(self, agent: Agent) -> AsyncGenerator[bytes, None]:
        """The feed of one page. It subscribes here, where the ``finally`` that
        unsubscribes is sure to run: a response whose body never starts (its client left
        first) would otherwise leave its subscription behind."""
        pending: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(FEED_BACKLOG + 1)
        behind = False

        def on_event(event: dict[str, Any]) -> None:
            nonlocal behind
            if behind:
                return
            if pending.qsize() >= FEED_BACKLOG:
                # A reader this far behind is ended at once (None): its page reconnects
                # and reloads the queue, which says more than the backlog would.
                behind = True
                while not pending.empty():
                    pending.get_nowait()
                pending.put_nowait(None)
                return
            pending.put_nowait(event_json(event))

        unsubscribe = self._feed.subscribe(agent.tenant_id, on_event)
        self.streams += 1
        closing = asyncio.ensure_future(self._closing.wait())
        logger.info("gateway.console.feed.open tenant=%s agent=%s", agent.tenant_id,
                    agent.agent_id)
        try:
            yield f"retry: {RECONNECT_MS}\n\n".encode()
            # After subscribing: the page reloads the queue on "hello", so nothing that
            # happened before the feed began is missing.
            yield sse_frame("hello", {"tenant": agent.tenant_id, "agent": agent.agent_id})
            while not self._closing.is_set():
                left = agent.valid_until - self._clock()
                if left <= 0:  # the token expired: the page reconnects, is refused (401)
                    return     # and asks its agent to sign in again
                getting = asyncio.ensure_future(pending.get())
                done, _ = await asyncio.wait({getting, closing},
                                             timeout=min(self._heartbeat_s, left),
                                             return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()  # the event, if any, stays queued
                    if not self._closing.is_set() and left > self._heartbeat_s:
                        yield b": keepalive\n\n"
                    continue
                event = getting.result()
                if event is None:  # fell behind: end; the page reconnects and reloads
                    return
                yield sse_frame("handoff", event)
        finally:
            closing.cancel()
            unsubscribe()
            self.streams -= 1
            logger.info("gateway.console.feed.closed tenant=%s agent=%s", agent.tenant_id,
                        agent.agent_id)

    # -- authentication and errors ------------------------------------------------------

    def _guarded(self, handler: Callable[[Request, Agent], Awaitable[Response]], *,
                 query_token: bool = False) -> Handler:
        """``handler`` for signed-in agents only, with every refusal and failure turned
        into a JSON error (never a traceback)."""

        async def guarded(request: Request) -> Response:
            try:
                agent = await self._agent(request, query_token)
                return await handler(request, agent)
            except ConsoleError as exc:
                return exc.response()
            except AuthError as exc:
                code = "unauthorized" if exc.status == 401 else "forbidden"
                if exc.status == 503:
                    code = "unavailable"
                return _error(exc.status, code, exc.reason)
            except HandoffRefused as exc:
                return _error(_REFUSAL_STATUS.get(exc.code, 409), exc.code, exc.reason)
            except InvalidIdError as exc:
                return _error(400, "invalid", str(exc))
            except REDIS_UNAVAILABLE as exc:
                logger.warning("gateway.console.unavailable dependency=redis error=%r", exc)
                return _error(503, "unavailable", "the handoff state cannot be read now, "
                              "please retry")

        return guarded

    async def _agent(self, request: Request, query_token: bool) -> Agent:
        headers = request.headers
        if query_token and "authorization" not in headers:
            credentials = Credentials(token=request.query_params.get("token") or None)
        else:
            found = credentials_from("/", headers)  # the header only: no token in URLs
            credentials = Credentials(token=found.token)
        if credentials.token is None:
            raise ConsoleError(401, "unauthorized", "sign in: send an agent's token in "
                               "'Authorization: Bearer <token>'")
        principal, _ = await self._auth.authenticate(credentials)
        # The signature and times were just verified: only the expiry is read again here.
        return agent_of(principal, token_expiry(credentials.token) + self._auth.leeway_s)


async def _read_body(request: Request) -> bytes:
    """The request's body, refused (413) past :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ConsoleError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ConsoleError(413, "too_large",
                               f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
