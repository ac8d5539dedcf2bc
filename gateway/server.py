"""The WebSocket gateway: sockets in, Avro events out, replies back.

One ``Gateway`` per process. It serves ``/ws`` (the frame protocol in
gateway/protocol.py), ``/healthz``, ``/readyz``, ``/metrics``, the web chat
page at ``/`` and, in development mode only, ``/dev/token``. Its second HTTP port
(gateway/api.py) serves the webhooks and the agent console (gateway/console.py).

A ``/ws`` handshake is authenticated before the socket exists (gateway/auth.py):
no or bad credentials are refused with 401, a browser Origin the tenant does not
allow or a conversation of another user with 403 (gateway/ownership.py), each
with its reason in the body; the tenant and user come from the credentials only.
Each accepted message gets an ``event_id`` and a per-conversation
sequence number (Redis INCR, so it stays monotonic across gateways and
reconnects; asked in batches, and by a busy gateway, which holds its messages,
every few tens of milliseconds: gateway/sequences.py), is produced to
``chat.inbound`` keyed by conversation id, and is acknowledged to the client
once the broker holds it.

Replies: every gateway follows every partition of ``chat.outbound`` and writes
each reply to the sockets it holds for that conversation. A socket remembers the
highest reply ``seq`` it was given, so a reply seen twice (a reprocessed event,
an outbox replay racing a live reply) is written once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import socket
import time
import uuid
import weakref
from collections import defaultdict, deque
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway import metrics
from gateway.admission import InFlight
from gateway.api import ApiServer
from gateway.auth import (
    Authenticator,
    AuthError,
    Principal,
    check_origin,
    credentials_from,
    mint_token,
)
from gateway.bus import DeliveryError, InboundProducer, ReplyFollower
from gateway.callbacks import callbacks_for
from gateway.channels import Channels, Ingress
from gateway.channels.base import InboundMessage, chat_message
from gateway.console import Console
from gateway.handoff_desk import open_desk, open_feed
from gateway.limits import Limits, RateLimiter
from gateway.ownership import Ownership
from gateway.protocol import (
    FrameError,
    MessageFrame,
    PingFrame,
    ResumeFrame,
    TypingFrame,
    ack_frame,
    encode,
    error_frame,
    parse_client_frame,
    parse_connection_params,
    welcome_frame,
)
from gateway.sequences import BusyHold, InboundSequences
from gateway.session import ChatSession
from gateway.tenants import Branding, TenantError, TenantStore
from kernel.errors import DecodeError
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.degradation import tenant_level
from streams.keys import ConversationKeys, InvalidIdError
from streams.security import kafka_credentials, redis_credentials
from streams.state import REDIS_UNAVAILABLE, ConversationStore, connect_cluster
from streams.topics import CHAT_INBOUND, CHAT_OUTBOUND
from streams.turn_state import BOT_TESTER_ROLE, is_bot_tester
from streams.usage import UsageCounter

__all__ = ["Gateway", "inbound_event"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_REPLAY_FAILURES: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, DecodeError)
#: Lifetime of a development-mode token (GET /dev/token).
DEV_TOKEN_TTL_S = 3600
#: Handshakes checked against Redis at once (see Gateway.__init__).
HANDSHAKE_REDIS_CALLS = 24
#: Bytes a socket may hold unsent for a frame to be written to it at once, without
#: waiting (ClientSession.send): websockets' own high-water mark (``write_limit``).
WRITE_AT_ONCE = 32 * 1024
#: How a client is closed when frames for it pile up unread (ClientSession.send).
NOT_READING = (1008, "the client is not reading the frames sent to it")
#: How every client is closed when the gateway shuts down (Gateway.close).
SHUTTING_DOWN = (1001, "gateway shutting down: reconnect with last_seq to continue")


def inbound_event(keys: ConversationKeys, principal: Principal, frame: MessageFrame,
                  event_id: str, seq: int, reply_route: str, timestamp_ms: int
                  ) -> dict[str, Any]:
    """The ``ChatMessage`` an accepted message frame becomes on ``chat.inbound``: laid out
    by :func:`gateway.channels.base.chat_message`, as every channel's messages are."""
    return chat_message(
        InboundMessage("ws", keys, principal.user_id, frame.text, frame.client_msg_id,
                       principal.tier, tuple(principal.roles)),
        event_id, seq, reply_route, timestamp_ms)


@dataclass(frozen=True, slots=True)
class Admission:
    """What a handshake established, kept from ``process_request`` for the handler."""

    principal: Principal
    keys: ConversationKeys
    last_seq: int
    branding: dict[str, Any] | None
    #: Replies show the dialogue state: asked (``debug=1``) by a bot tester.
    with_state: bool = False


class ClientSession:
    """One open socket: who it is, its chat state (gateway/session.py), and the frames
    waiting to be written to it.

    Every frame for the client goes through :meth:`send`, which never waits: one writer
    task per socket, made while frames wait, writes them in order. A client that does
    not read makes a write wait: once one has waited ``send_timeout`` seconds, or more
    than ``send_limit`` frames wait, the client is closed (1008), and nothing it holds
    slows down the other sockets or the gateway. A burst (a replay, a batch of replies)
    to a client that reads is not cut off: each of its writes completes.
    """

    __slots__ = ("_closing", "_log", "_queue", "_writer", "chat", "keys", "principal",
                 "send_limit", "send_timeout", "tier", "user_id", "ws")

    def __init__(self, ws: ServerConnection, keys: ConversationKeys, principal: Principal,
                 *, send_limit: int = 1024, send_timeout: float = 20.0) -> None:
        self.ws = ws
        self.keys = keys
        self.principal = principal  # who, from verified credentials (gateway/auth.py)
        self.user_id = principal.user_id
        self.tier = principal.tier  # its rate limit's tier (gateway/limits.py)
        self.send_limit = send_limit
        self.send_timeout = send_timeout
        self.chat = ChatSession()
        # Made on first use: most of 10,000 idle sessions never need them.
        self._queue: deque[str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._log is None:
            self._log = logging.LoggerAdapter(logger, {
                "conn": str(self.ws.id)[:8], "conversation_id": self.keys.conversation_id})
        return self._log

    def send(self, frame: str) -> None:
        """Write ``frame`` now, or queue it after those queued before it."""
        if self._closing is not None:
            return
        if self._writer is None and self.ws.transport.get_write_buffer_size() < WRITE_AT_ONCE:
            # Nothing waits and the client keeps up (``transport``: the asyncio transport
            # the connection writes to): written in this loop turn, with no writer task,
            # timeout or send lock. websockets' broadcast() writes without waiting and
            # skips a closed socket. About 12 µs of CPU less a frame (docs/benchmarks.md).
            broadcast((self.ws,), frame)
            return
        if self._queue is None:
            self._queue = deque()
        if len(self._queue) >= self.send_limit:
            self._cut_off()
            return
        self._queue.append(frame)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._queue:
                # Waits only when the socket's buffers are full: the client is not reading.
                # (asyncio.timeout, unlike wait_for, makes no task per frame.)
                async with asyncio.timeout(self.send_timeout):
                    await self.ws.send(self._queue[0])
                self._queue.popleft()
        except ConnectionClosed:
            self._queue = None
        except TimeoutError:
            self._writer = None
            self._cut_off()
        finally:
            self._writer = None

    def _cut_off(self) -> None:
        metrics.SEND_QUEUE_OVERFLOWS.inc()
        self.log.warning("gateway.client.not_reading queued=%d",
                         len(self._queue) if self._queue else 0)
        self._queue = None
        if self._writer is not None:
            self._writer.cancel()  # stuck waiting for the client to read
        self._closing = asyncio.create_task(self.ws.close(*NOT_READING))

    def deliver(self, replies: list[dict[str, Any]]) -> None:
        """Live replies from the bus: those the client does not have yet are queued."""
        duplicates = self.chat.duplicates
        frames = self.chat.on_replies(replies)
        metrics.REPLIES_DUPLICATE.inc(self.chat.duplicates - duplicates)
        for frame in frames:
            self.send(frame)
        metrics.REPLIES_DELIVERED.inc(len(frames))


class EventIds:
    """Event ids unique across gateways and restarts without a system call each.

    ``uuid4()`` reads 16 random bytes from the kernel for every message, which
    cost about 1.4 % of a busy gateway's CPU. Here one random 64-bit prefix per
    gateway process is followed by a counter: 32 hex digits, like a UUID's.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.id = settings.gateway_id or f"{socket.gethostname()}-{os.getpid()}"
        self._event_ids = EventIds()
        self.inbound_topic = settings.topic(CHAT_INBOUND)
        self.outbound_topic = settings.topic(CHAT_OUTBOUND)
        registry = settings.schema_registry_url
        self.inbound_codec = codec_for("chat_message", registry, self.inbound_topic)
        self.reply_codec = codec_for("bot_reply", registry, self.outbound_topic)
        self.sessions: dict[ConversationKeys, set[ClientSession]] = defaultdict(set)
        self.redis = connect_cluster(settings.redis_startup_nodes, fail_fast=True,
                                     credentials=redis_credentials(settings))
        self.store = ConversationStore(self.redis, ttl_s=settings.session_ttl_s)
        self.hold = BusyHold(settings.gateway_busy_linger_ms / 1000, settings.gateway_busy_rate)
        self.sequences = InboundSequences(self.store)
        self.producer = InboundProducer(settings.kafka_bootstrap,
                                        linger_ms=settings.gateway_linger_ms,
                                        client_id=f"gw-{self.id}",
                                        credentials=kafka_credentials(settings))
        self.follower = ReplyFollower(
            settings.kafka_bootstrap, self.outbound_topic, self._on_reply_batch,
            fetch_wait_ms=settings.fetch_max_wait_ms, credentials=kafka_credentials(settings),
        )
        self.limits = Limits.from_settings(settings)
        self._tenant_limits: dict[tuple[str, tuple[tuple[str, str], ...]], Limits] = {}
        self.limiter = RateLimiter(self.redis)
        self.in_flight = InFlight(settings.gateway_max_in_flight,
                                  settings.gateway_in_flight_expiry_s)
        metrics.IN_FLIGHT.set_function(lambda: len(self.in_flight))
        self.tenants = TenantStore(self.redis)
        self.auth = Authenticator(self.tenants, leeway_s=settings.jwt_leeway_s)
        self.ownership = Ownership(self.redis, ttl_s=settings.session_ttl_s)
        self.usage = UsageCounter(self.redis, component="gateway")
        # Each handshake asks Redis (its owner record, a tenant or key on a cache miss).
        # The cluster client raises MaxConnectionsError instead of waiting when more calls
        # are in flight than its pool (64) holds: a burst of connects (a reconnect storm,
        # the load benchmark's) waits here instead, leaving connections for messages.
        self._handshake_slots = asyncio.Semaphore(HANDSHAKE_REDIS_CALLS)
        # Handshakes admitted by _process_request, until _handle takes them; weak, so a
        # handshake that fails after admission leaves nothing behind.
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, Admission] = (
            weakref.WeakKeyDictionary())
        self._server: Server | None = None
        self._ready = False
        self._health_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # pending acks and reply deliveries
        # The second HTTP port (POST: webhooks, callbacks) and the Slack and SMS channels,
        # whose messages take the sockets' path: same sequences, same producer.
        self.api = ApiServer(settings.gateway_host, settings.gateway_api_port)
        self.channels = Channels(settings, self.redis, Ingress(
            self.sequences, self.producer, self.inbound_codec, self.inbound_topic,
            self._event_ids.next, self.id, self.in_flight), self.reply_codec)
        self.api.add_routes(self.channels.routes)
        # The agent console (gateway/console.py): handoff commands through this gateway's
        # producer and Redis client, and the tenant's handoff.events followed live.
        self.handoff_feed = open_feed(settings)
        self.console = Console(self.auth, open_desk(settings, self.redis, self.producer),
                               self.handoff_feed)
        self.api.add_routes(self.console.routes)
        # Backends' signed callbacks and business events (gateway/callbacks.py).
        self.api.add_routes(callbacks_for(settings, self.redis, self.producer.send).routes)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self.producer.start()
        self.follower.start()
        self.handoff_feed.start()
        self._server = await serve(
            self._handle,
            self.settings.gateway_host,
            self.settings.gateway_port,
            process_request=self._process_request,
            max_size=self.settings.max_frame_bytes,
            compression=None,  # ~60 KB less per connection; chat frames are small
            # Keepalive is one task for all sockets (_keep_alive), not one per socket:
            # about 2 KB less per connection at 10,000 sessions.
            ping_interval=None,
            open_timeout=10,
            close_timeout=3,  # a peer that never answers the closing handshake
        )
        await self.api.start()
        self.channels.start()
        self.usage.start()
        self._health_task = asyncio.create_task(self._watch_health())
        self._keepalive_task = asyncio.create_task(self._keep_alive())
        logger.info("gateway.started id=%s url=%s api=%s", self.id, self.url, self.api.url)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.settings.gateway_host}:{self.port}/"

    async def wait_ready(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not self._ready:
            if time.monotonic() > deadline:
                raise TimeoutError("gateway not ready: see /readyz")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop serving and release everything; idempotent.

        In order: messages a busy gateway holds go on; the health and keepalive loops are
        cancelled and awaited; every socket
        is closed with 1001 (going away); the reply follower stops, so no new delivery
        starts; the producer flushes what it holds (up to 5 s), which settles the pending
        acks. Acks and replies still pending then have no socket left to go to: their
        tasks end at once and are awaited, and one whose delivery never settled (the
        broker unreachable) is cancelled. A message the broker took whose ack was not
        sent is still answered; the client gets the reply when it resumes (``last_seq``).
        """
        self.hold.close()  # what a busy gateway holds goes on now
        loops = [t for t in (self._health_task, self._keepalive_task) if t is not None]
        for task in loops:
            task.cancel()
        if loops:
            await asyncio.wait(loops)
        self._health_task = self._keepalive_task = None
        if self._server is not None:
            # Every client is told why, and how to carry on elsewhere; then the server
            # closes what is left (connections still in their handshake) with 1001.
            await asyncio.gather(*(client.ws.close(*SHUTTING_DOWN)
                                   for clients in self.sessions.values() for client in clients),
                                 return_exceptions=True)
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.console.close()  # its live feeds end, so the API server can stop
        await self.api.close()  # webhooks: requests in progress finish first
        await self.handoff_feed.close()
        await self.channels.close()
        await self.follower.close()
        await self.producer.close()
        if self._tasks:
            _, unsettled = await asyncio.wait(self._tasks, timeout=1)
            for task in unsettled:
                task.cancel()
            if unsettled:
                await asyncio.wait(unsettled)
        await self.sequences.close()
        await self.usage.close()
        await self.limiter.close()
        await self.redis.aclose()
        logger.info("gateway.stopped id=%s", self.id)

    async def _watch_health(self) -> None:
        while True:
            redis_ok = await self.store.ping()
            kafka_ok = await asyncio.to_thread(self.producer.connected)
            self._ready = (redis_ok and kafka_ok and self.follower.assigned.is_set()
                           and self.handoff_feed.assigned.is_set() and self.channels.ready)
            await asyncio.sleep(0.5 if not self._ready else 2)

    async def _keep_alive(self) -> None:
        """Ping every socket once per interval and close those whose pong does not come
        within the timeout (1011, as websockets' own keepalive does). Pings are spread
        evenly over the interval: a burst of 10,000 would stall the loop for everyone."""
        interval, timeout = self.settings.ping_interval_s, self.settings.ping_timeout_s
        tick = min(0.05, interval / 4)
        due: list[ClientSession] = []
        next_up, per_tick, round_began = 0, 1, -math.inf
        outstanding: deque[tuple[float, ClientSession, asyncio.Future[float]]] = deque()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if next_up >= len(due) and now - round_began >= interval:
                # A new round over the sockets open now, one interval after the last began.
                due = [c for clients in self.sessions.values() for c in clients]
                round_began = now
                next_up, per_tick = 0, max(1, math.ceil(len(due) * tick / interval))
            for client in due[next_up:next_up + per_tick]:
                try:
                    pong = cast(asyncio.Future[float], await client.ws.ping())
                except ConnectionClosed:
                    continue
                outstanding.append((now, client, pong))
            next_up += per_tick
            dead = []
            while outstanding and now - outstanding[0][0] >= timeout:
                _, client, pong = outstanding.popleft()
                if not pong.done():
                    client.log.info("gateway.keepalive.timeout")
                    dead.append(client)
            await asyncio.gather(*(c.ws.close(1011, "keepalive ping timeout") for c in dead),
                                 return_exceptions=True)

    # -- HTTP --------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection,
                               request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ws":
            return await self._admit(conn, request)
        if path == "/dev/token" and self.settings.dev_mode:
            return await self._dev_token(conn, request.path)
        if path == "/healthz":
            return conn.respond(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if self._ready:
                return conn.respond(HTTPStatus.OK, "ready\n")
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "not ready\n")
        if path == "/metrics":
            response = conn.respond(HTTPStatus.OK, generate_latest().decode())
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response
        if path in ("/", "/index.html"):
            response = conn.respond(HTTPStatus.OK, (STATIC_DIR / "chat.html").read_text())
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def _admit(self, conn: ServerConnection, request: Request) -> Response | None:
        """Authenticate a /ws handshake and check the conversation is the user's; None
        lets the handshake go on, a response refuses it with the reason in the body."""
        try:
            params = parse_connection_params(request.path)
        except ValueError as exc:  # an InvalidIdError too
            metrics.HANDSHAKES_REFUSED.labels("400").inc()
            return conn.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        try:
            async with self._handshake_slots:
                principal, config = await self.auth.authenticate(
                    credentials_from(request.path, request.headers))
                check_origin(config, request.headers.get("Origin"))
                keys = ConversationKeys(principal.tenant_id, params.conversation_id)
                await self.ownership.claim(keys, principal, config.retention_s or None)
        except AuthError as exc:
            metrics.HANDSHAKES_REFUSED.labels(str(exc.status)).inc()
            logger.info("gateway.handshake.refused status=%s reason=%s", exc.status, exc.reason)
            return conn.respond(HTTPStatus(exc.status), f"{exc.reason}\n")
        except REDIS_UNAVAILABLE as exc:
            metrics.HANDSHAKES_REFUSED.labels("503").inc()
            logger.warning("gateway.handshake.unavailable dependency=redis error=%r", exc)
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                "cannot check credentials now, please retry\n")
        branding = config.branding.to_frame() if config.branding != Branding() else None
        # debug=1 without the role is no error: the replies just come without the state.
        with_state = params.debug and is_bot_tester(principal.roles)
        self._admitted[conn] = Admission(principal, keys, params.last_seq, branding, with_state)
        return None

    async def _dev_token(self, conn: ServerConnection, path: str) -> Response:
        """Development mode: a short-lived token for a new user of the demo tenant;
        ``?role=bot_tester`` gives it that role (``parley test --url``), no other role."""
        roles = parse_qs(urlsplit(path).query).get("role", [])
        if any(role != BOT_TESTER_ROLE for role in roles):
            return conn.respond(HTTPStatus.BAD_REQUEST,
                                f"/dev/token gives no role but {BOT_TESTER_ROLE}\n")
        tenant = self.settings.dev_tenant
        try:
            config = await self.tenants.get(tenant)
        except REDIS_UNAVAILABLE:
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "redis unavailable\n")
        if config is None:
            return conn.respond(HTTPStatus.NOT_FOUND, f"no tenant {tenant!r}\n")
        user = f"u-{uuid.uuid4().hex[:12]}"
        try:
            token = mint_token(config, user, ttl_s=DEV_TOKEN_TTL_S, roles=roles[:1])
        except TenantError as exc:  # a tenant whose tokens come from its JWKS only
            return conn.respond(HTTPStatus.CONFLICT, f"{exc}\n")
        body = encode({"token": token, "tenant": tenant, "user": user})
        response = conn.respond(HTTPStatus.OK, body)
        response.headers["Content-Type"] = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- WebSocket ---------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        admission = self._admitted.pop(ws, None)
        if admission is None:  # only _admit lets a /ws handshake through
            await ws.close(1011, "not admitted")
            return
        keys, last_seq = admission.keys, admission.last_seq
        user = admission.principal.user_id
        # The handshake is done and read: its headers would otherwise stay for the socket's
        # lifetime. Dropping them took a session from 14.4 to 10.2 KB and from 77 to 68
        # objects that every full collection scans (bench connections, 10,000 sessions).
        ws.request.headers.clear()
        ws.response = None

        client = ClientSession(ws, keys, admission.principal,
                               send_limit=self.settings.gateway_send_queue,
                               send_timeout=self.settings.gateway_send_timeout_s)
        client.chat.with_state = admission.with_state
        self.sessions[keys].add(client)
        metrics.CONNECTIONS.inc()
        try:
            await ws.send(welcome_frame(keys.tenant_id, user, keys.conversation_id, self.id,
                                        branding=admission.branding,
                                        max_text_bytes=self.settings.max_text_bytes,
                                        level=await tenant_level(self.redis, keys.tenant_id)))
            if last_seq >= 0:
                await self._replay(client, last_seq)
            async for data in ws:
                await self._on_frame(client, data)
        except ConnectionClosed:
            pass
        finally:
            self.sessions[keys].discard(client)
            if not self.sessions[keys]:
                del self.sessions[keys]
            metrics.CONNECTIONS.dec()

    async def _on_frame(self, client: ClientSession, data: str | bytes) -> None:
        try:
            frame = parse_client_frame(data, self.settings.max_text_bytes)
        except FrameError as exc:
            metrics.FRAMES_REJECTED.labels(exc.code).inc()
            client.log.info("gateway.frame.rejected code=%s", exc.code)
            client.send(error_frame(exc.code, exc.message, exc.client_msg_id))
            return
        match frame:
            case MessageFrame():
                await self._accept(client, frame)
            case ResumeFrame(last_seq=last_seq):
                await self._replay(client, last_seq)
            case PingFrame():
                client.send(encode({"type": "pong"}))
            case TypingFrame():
                pass

    async def _accept(self, client: ClientSession, frame: MessageFrame) -> None:
        """Check the user's and tenant's rate limits, give the message a sequence number
        and put it on the bus; ack when it is there. A busy gateway holds the message
        first, and does each of these for everything it held at once (gateway/sequences.py)."""
        received = time.perf_counter()
        keys = client.keys
        # A user this gateway already refused is answered at once: a flood is neither
        # held nor counted as the traffic that makes the gateway busy.
        allowed = self.limiter.refused(keys.tenant_id, client.user_id)
        if allowed is None:
            await self.hold.arrive()
            allowed = await self.limiter.check(keys.tenant_id, client.user_id, client.tier,
                                               await self.limits_of(keys.tenant_id))
        if not allowed.allowed:
            metrics.MESSAGES_FAILED.labels("rate_limited").inc()
            client.send(error_frame(
                "rate_limited", f"too many messages from this {allowed.limited_by}, "
                f"retry in {allowed.retry_after_s:g} s", frame.client_msg_id,
                retry_after=allowed.retry_after_s,
            ))  # fmt: skip
            return
        event_id = self._event_ids.next()
        if not self.in_flight.admit(event_id):
            metrics.MESSAGES_FAILED.labels("overloaded").inc()
            client.send(error_frame(
                "overloaded", "too busy to take this message now, please retry shortly",
                frame.client_msg_id,
            ))  # fmt: skip
            return
        try:
            numbered = await self.sequences.number(keys, frame.client_msg_id, event_id)
        except REDIS_UNAVAILABLE as exc:
            self.in_flight.release(event_id)
            metrics.MESSAGES_FAILED.labels("redis").inc()
            client.log.warning("gateway.message.unavailable dependency=redis error=%r", exc)
            client.send(error_frame(
                "unavailable", "message not accepted, please retry", frame.client_msg_id
            ))  # fmt: skip
            return
        seq = numbered.seq
        if numbered.first_event_id:  # a resend (its ack was lost): the first try stands
            self.in_flight.release(event_id)
            metrics.MESSAGES_RESENT.inc()
            client.send(ack_frame(frame.client_msg_id, numbered.first_event_id, seq))
            return
        value = self.inbound_codec.encode(inbound_event(
            keys, client.principal, frame, event_id, seq, self.id, int(time.time() * 1000)
        ))  # fmt: skip
        delivery = self.producer.send(self.inbound_topic, keys.conversation_id, value)
        # Acks are sent as deliveries complete; the next frame is read meanwhile.
        self._spawn(self._ack_when_delivered(client, frame, event_id, seq, delivery, received))

    async def limits_of(self, tenant_id: str) -> Limits:
        """The rate limits of a tenant's users: its configured ``rates`` over the settings'
        (the tenant's configuration is cached for seconds: tenants.py). Redis unreachable:
        the settings' limits, as the limiter itself fails open."""
        try:
            config = await self.tenants.get(tenant_id)
        except REDIS_UNAVAILABLE:
            return self.limits
        if config is None or not config.rates:
            return self.limits
        key = (tenant_id, tuple(sorted(config.rates.items())))
        limits = self._tenant_limits.get(key)
        if limits is None:
            if len(self._tenant_limits) > 10_000:
                self._tenant_limits.clear()
            limits = self._tenant_limits[key] = self.limits.overridden(config.rates)
        return limits

    async def _ack_when_delivered(
        self, client: ClientSession, frame: MessageFrame, event_id: str, seq: int,
        delivery: asyncio.Future[int], received: float,
    ) -> None:  # fmt: skip
        try:
            await delivery
        except DeliveryError as exc:
            self.in_flight.release(event_id)
            metrics.MESSAGES_FAILED.labels("kafka").inc()
            client.log.warning("gateway.message.unavailable dependency=kafka error=%s", exc,
                               extra={"trace_id": event_id})
            if exc.possibly_written:
                frame_out = error_frame(
                    "unconfirmed", "message not confirmed in time: it may still be answered",
                    frame.client_msg_id,
                )  # fmt: skip
            else:  # never written: its retry must be taken as new, not as a resend
                await self.store.forget_message(client.keys, frame.client_msg_id)
                frame_out = error_frame("unavailable", "message not accepted, please retry",
                                        frame.client_msg_id)
        else:
            metrics.MESSAGES_ACCEPTED.inc()
            self.usage.count(client.keys.tenant_id)
            metrics.ACK_LATENCY.observe(time.perf_counter() - received)
            frame_out = ack_frame(frame.client_msg_id, event_id, seq)
        client.send(frame_out)

    async def _replay(self, client: ClientSession, last_seq: int) -> None:
        """Send the replies after ``last_seq`` from the outbox, then resume live delivery."""
        after = client.chat.begin_replay(last_seq)
        replies: list[dict[str, Any]] = []
        try:
            stored = await self.store.replies_after(client.keys, after)
            replies = [self.reply_codec.decode(v) for v in stored]
        except _REPLAY_FAILURES as exc:
            client.log.warning("gateway.resume.failed error=%r", exc)
            client.send(error_frame("resume_failed", "could not replay missed replies"))
        finally:  # cancelled too: live replies are no longer held
            frames = client.chat.end_replay(replies)
        for frame in frames:
            client.send(frame)
        metrics.REPLIES_DELIVERED.inc(len(frames))

    # -- replies -----------------------------------------------------------

    def _on_reply_batch(self, values: list[bytes]) -> None:
        """Called on the loop with a batch of raw replies from the follower thread."""
        by_client: dict[ClientSession, list[dict[str, Any]]] = defaultdict(list)
        # Replies may come from any producer: a bad one is logged, counted and skipped,
        # and the rest of the batch is still delivered.
        for value in values:
            try:
                reply = self.reply_codec.decode(value)
            except DecodeError as exc:
                metrics.REPLIES_INVALID.labels("undecodable").inc()
                logger.warning("gateway.reply.undecodable error=%s", exc)
                continue
            self.in_flight.release(reply["payload"]["in_reply_to"])
            try:
                keys = ConversationKeys(reply["tenant_id"], reply["conversation_id"])
            except InvalidIdError as exc:
                metrics.REPLIES_INVALID.labels("bad_id").inc()
                logger.warning("gateway.reply.bad_id event_id=%s error=%s", reply["event_id"], exc)
                continue
            for client in self.sessions.get(keys, ()):
                by_client[client].append(reply)
        for client, replies in by_client.items():
            client.deliver(replies)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run an ack or a delivery in the background; close() settles what is pending."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
