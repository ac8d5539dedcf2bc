"""An open-loop load generator of real WebSocket chat clients.

Each load process (``multiprocessing``, spawn) opens its share of the
conversations — one WebSocket session each, plus optional idle sessions that
only take their welcome frame — reports that it is connected, waits for the
common start time, then sends every message at its *scheduled* time whether or
not earlier replies have come back (open loop). Conversation ``c`` sends its
``j``-th message at ``(j * N + c) / rate`` seconds, so the N conversations
together offer ``rate`` messages per second, evenly spread.

Latencies are measured from the scheduled send time, so a client or server that
falls behind shows up as latency instead of silently lowering the offered load
(no coordinated omission). Times are seconds from the common start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import multiprocessing as mp
import os
import queue
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from typing import Any
from urllib.parse import urlencode

import orjson
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.script import ConversationScript
from kernel.runtime import timing_collections

# The generator must cost as little CPU as it can: it shares the machine with the
# system it measures. picows (a WebSocket client in Cython) hands each frame to a
# callback; orjson parses it. Both come with the bench extra.
_loads: Callable[[bytes], Any] = orjson.loads

__all__ = ["ConnectReport", "LoadGenerator", "LoadPlan", "LoadResult", "split_plan"]

NAN = math.nan
#: How long a load process keeps its sessions open after the load for the parent's
#: measurements, if it is never released.
_RELEASE_TIMEOUT_S = 60.0
#: How long a session waits for the gateway's answer to its closing frame.
_CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LoadPlan:
    """What one load process does."""

    urls: tuple[str, ...]  # ws://host:port/ws; conversation c uses urls[c % len(urls)]
    run_id: str
    conversations: tuple[int, ...]  # global indices of the conversations it drives
    total_conversations: int
    rate: float  # messages per second offered by all processes together
    duration: float  # seconds during which messages are scheduled
    drain_timeout: float  # seconds to wait for outstanding replies after the last send
    script: ConversationScript
    idle: int = 0  # extra sessions that connect and stay silent
    idle_offset: int = 0  # global index of this process's first idle session
    #: A tenant API key (X-Parley-Key): each session speaks for its own user of that
    #: tenant (the demo's, whose knowledge base answers). Empty: no credentials (the
    #: inline baseline checks none).
    api_key: str = ""
    connect_concurrency: int = 200
    connect_timeout: float = 60

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a load plan needs at least one WebSocket URL")
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("rate and duration must be positive")

    def send_time(self, conversation: int, message: int) -> float:
        return (message * self.total_conversations + conversation) / self.rate

    def messages_of(self, conversation: int) -> int:
        """How many messages ``conversation`` sends within the duration."""
        budget = self.duration * self.rate - conversation
        return max(0, math.ceil(budget / self.total_conversations))

    def session_url(self, index: int, *, idle: bool = False) -> str:
        name = f"{self.run_id}-{'i' if idle else 'c'}{index}"
        query = urlencode({"conversation": name, "user": f"u-{name}"})
        return f"{self.urls[index % len(self.urls)]}?{query}"


def split_plan(processes: int, total: int, idle: int = 0, **common: Any) -> list[LoadPlan]:
    """Share ``total`` conversations (and ``idle`` sessions) among ``processes`` plans."""
    processes = max(1, min(processes, max(total, 1)))
    plans = []
    idle_offset = 0
    for p in range(processes):
        share = idle // processes + (1 if p < idle % processes else 0)
        plans.append(LoadPlan(
            conversations=tuple(range(p, total, processes)), total_conversations=total,
            idle=share, idle_offset=idle_offset, **common,
        ))  # fmt: skip
        idle_offset += share
    return plans


@dataclass(frozen=True)
class ConnectReport:
    """How connecting went in one load process."""

    process: int
    pid: int
    connected: int
    failed: int
    seconds: float
    errors: dict[str, int]


@dataclass
class LoadResult:
    """Per-message timings of one load process (NaN: never happened)."""

    process: int
    conversations: list[int] = field(default_factory=list)
    message_counts: list[int] = field(default_factory=list)
    scheduled: array[float] = field(default_factory=lambda: array("d"))
    sent: array[float] = field(default_factory=lambda: array("d"))
    acked: array[float] = field(default_factory=lambda: array("d"))
    replied: array[float] = field(default_factory=lambda: array("d"))
    failed: array[float] = field(default_factory=lambda: array("d"))  # error frame received
    duplicated: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    idle_open_at_end: int = 0
    idle_total: int = 0
    full_gc_pauses: list[float] = field(default_factory=list)  # s, while it ran the load


class _Conversation:
    __slots__ = ("count", "first", "index", "seen_seqs", "session")

    def __init__(self, index: int, first: int, count: int, session: _Session) -> None:
        self.index = index
        self.first = first  # position of its message 0 in the result arrays
        self.count = count  # messages it sends
        self.session = session
        self.seen_seqs: set[Any] = set()


class _Session(WSListener):
    """One WebSocket session's frames, handed to the client as they arrive (picows calls
    :meth:`on_ws_frame` from the event loop, with no task or queue per frame)."""

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self.client = client
        self.transport: WSTransport | None = None
        self.conversation: _Conversation | None = None  # None: connecting, or idle
        self.welcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.disconnected = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            payload = _loads(frame.get_payload_as_bytes())
            if not self.welcome.done():
                self.welcome.set_result(payload)
            elif self.conversation is not None:
                self.client.on_frame(self.conversation, payload)
        elif kind is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError("closed before its welcome frame"))
        if self.conversation is not None:
            self.client.on_closed(self, self.conversation)

    @property
    def close_code(self) -> int | None:
        """The code the gateway closed with (None: it did not)."""
        handshake = self.transport.close_handshake if self.transport else None
        received = handshake.recv if handshake else None
        return received.code.value if received else None


class _Client:
    """The asyncio side of one load process."""

    def __init__(self, plan: LoadPlan, process: int) -> None:
        self.plan = plan
        self.result = LoadResult(process)
        self.errors: Counter[str] = Counter()
        self.conversations: list[_Conversation] = []
        self.idle: list[_Session] = []
        self.t0 = 0.0
        self.outstanding = 0
        self._closing = False
        self._sending = True
        self._answered = asyncio.Event()

    # -- connecting --------------------------------------------------------

    async def connect_all(self) -> ConnectReport:
        plan = self.plan
        began = time.perf_counter()
        limit = asyncio.Semaphore(plan.connect_concurrency)
        counts = [plan.messages_of(c) for c in plan.conversations]
        total = sum(counts)
        r = self.result
        r.conversations, r.message_counts = list(plan.conversations), counts
        for name in ("scheduled", "sent", "acked", "replied", "failed"):
            setattr(r, name, array("d", [NAN]) * total)
        first = 0
        starts = []
        for c, count in zip(plan.conversations, counts, strict=True):
            starts.append(first)
            for j in range(count):
                r.scheduled[first + j] = plan.send_time(c, j)
            first += count

        headers = {"X-Parley-Key": plan.api_key} if plan.api_key else None

        async def open_one(url: str) -> _Session | None:
            async with limit:
                try:
                    async with asyncio.timeout(plan.connect_timeout):
                        _, session = await ws_connect(
                            lambda: _Session(self), url, extra_headers=headers,
                            websocket_handshake_timeout=plan.connect_timeout,
                            # uvloop's transport, as before picows; its own (aiofastnet)
                            # cost no less here.
                            use_aiofastnet=False,
                        )
                        assert isinstance(session, _Session)
                        welcome = await session.welcome
                except (OSError, TimeoutError, WSError) as exc:
                    self.errors[f"connect:{type(exc).__name__}"] += 1
                    return None
                if welcome.get("type") != "welcome":
                    self.errors[f"connect:unexpected_{welcome.get('type')}"] += 1
                return session

        active = [open_one(plan.session_url(c)) for c in plan.conversations]
        idle = [
            open_one(plan.session_url(plan.idle_offset + i, idle=True)) for i in range(plan.idle)
        ]
        opened = await asyncio.gather(*active, *idle)
        for c, first_index, count, session in zip(
            plan.conversations, starts, counts, opened, strict=False
        ):
            if session is not None:
                conv = _Conversation(c, first_index, count, session)
                session.conversation = conv
                self.conversations.append(conv)
        self.idle = [session for session in opened[len(active) :] if session is not None]
        failed = sum(1 for session in opened if session is None)
        return ConnectReport(
            r.process,
            os.getpid(),
            len(opened) - failed,
            failed,
            time.perf_counter() - began,
            dict(self.errors),
        )

    # -- running -----------------------------------------------------------

    async def run(self, start_at: float) -> LoadResult:
        """Send the schedule and wait for the answers; the sessions stay open."""
        with _full_collections_timed(self.result.full_gc_pauses):
            self.t0 = time.perf_counter() + (start_at - time.time())
            await self._send_all()
            await self._drain()
        r = self.result
        r.idle_total = self.plan.idle
        r.idle_open_at_end = sum(1 for session in self.idle if session.close_code is None
                                 and not session.disconnected)
        r.errors = dict(self.errors)
        return r

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    async def _send_all(self) -> None:
        """Send each message at its scheduled time, in time order, across conversations."""
        plan, r = self.plan, self.result
        # Walk the schedule: message j of every conversation, then message j + 1, ...
        order = sorted(self.conversations, key=lambda conv: conv.index)
        rounds = max((conv.count for conv in order), default=0)
        unyielded = 0
        for j in range(rounds):
            for conv in order:
                if j >= conv.count:
                    continue
                slot = conv.first + j
                delay = r.scheduled[slot] - self._now()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                    unyielded = 0
                elif unyielded >= 32:  # behind schedule: still let the frames in
                    await asyncio.sleep(0)
                    unyielded = 0
                unyielded += 1
                transport = conv.session.transport
                if conv.session.disconnected or transport is None:
                    self.errors["send:connection_closed"] += 1
                    continue
                text = plan.script.text(conv.index, j)
                frame = f'{{"type":"message","client_msg_id":"{j}","text":{json.dumps(text)}}}'
                transport.send(WSMsgType.TEXT, frame.encode())
                r.sent[slot] = self._now()
                self.outstanding += 1

    async def _drain(self) -> None:
        """Wait for the replies still due, at most ``drain_timeout`` seconds."""
        self._sending = False
        if self.outstanding > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), self.plan.drain_timeout)

    def _settle_one(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and not self._sending:
            self._answered.set()

    def on_frame(self, conv: _Conversation, frame: dict[str, Any]) -> None:
        now = self._now()
        r = self.result
        count = conv.count
        kind = frame.get("type")
        if kind == "reply":
            slot = _slot(conv, frame.get("in_reply_to"), count)
            seq = frame.get("seq")
            duplicate = seq in conv.seen_seqs
            conv.seen_seqs.add(seq)
            if slot is None:
                self.errors["reply:unknown_client_msg_id"] += 1
            elif not math.isnan(r.replied[slot]):
                duplicate = True
            else:
                r.replied[slot] = now
                if math.isnan(r.failed[slot]):
                    self._settle_one()
            r.duplicated += duplicate
        elif kind == "ack":
            slot = _slot(conv, frame.get("client_msg_id"), count)
            if slot is not None and math.isnan(r.acked[slot]):
                r.acked[slot] = now
        elif kind == "error":
            self.errors[f"frame:{frame.get('code')}"] += 1
            slot = _slot(conv, frame.get("client_msg_id"), count)
            if slot is not None and math.isnan(r.failed[slot]):
                r.failed[slot] = now
                if math.isnan(r.replied[slot]):
                    self._settle_one()

    def on_closed(self, session: _Session, conv: _Conversation) -> None:
        """A conversation's session ended: an error unless this process closed it after
        every answer came (or the gateway closed it normally with nothing due)."""
        if self._closing:
            return
        if session.close_code not in (None, 1000, 1001) or self.outstanding > 0:
            self.errors["connection_closed"] += 1

    async def close(self) -> None:
        self._closing = True
        sessions = [conv.session for conv in self.conversations] + self.idle
        for start in range(0, len(sessions), 500):
            await asyncio.gather(*(_close(s) for s in sessions[start : start + 500]),
                                 return_exceptions=True)


async def _close(session: _Session) -> None:
    """The closing handshake, then the TCP connection (at once after
    ``_CLOSE_TIMEOUT_S``)."""
    transport = session.transport
    if transport is None or session.disconnected:
        return
    if not transport.is_close_frame_sent:
        transport.send_close(WSCloseCode.OK)
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await transport.wait_disconnected()
    except TimeoutError:
        transport.disconnect(graceful=False)


@contextlib.contextmanager
def _full_collections_timed(pauses: list[float]) -> Iterator[None]:
    """Record this process's full collections while the block runs.

    A pause here delays sends and reads alike, so it would count as the system's
    latency; at 10,000 sessions each full collection of the gateway (the same client
    library, the same sessions) took up to half a second. A run that shows none
    measured the system, not the load generator.
    """

    def on_pause(generation: int, seconds: float) -> None:
        if generation == 2:
            pauses.append(seconds)

    timed = timing_collections(on_pause)
    gc.callbacks.append(timed)
    try:
        yield
    finally:
        gc.callbacks.remove(timed)


def _slot(conv: _Conversation, client_msg_id: Any, count: int) -> int | None:
    try:
        j = int(client_msg_id)
    except (TypeError, ValueError):
        return None
    return conv.first + j if 0 <= j < count else None


# -- processes ------------------------------------------------------------------


def _process_main(
    plan: LoadPlan, process: int, reports: Any, go: Any, start_at: Any, results: Any,
    release: Any,
) -> None:
    import uvloop

    async def main() -> None:
        client = _Client(plan, process)
        reports.put(await client.connect_all())
        await asyncio.to_thread(go.wait)
        results.put(await client.run(start_at.value))
        await asyncio.to_thread(release.wait, _RELEASE_TIMEOUT_S)
        await client.close()

    uvloop.run(main())


class LoadGenerator:
    """Runs load plans in separate processes, phase by phase, from the parent.

    ``connect()`` starts the processes and returns once every one has opened its
    sessions; ``go(start_at)`` releases them; ``results()`` collects their
    timings once the load is over, and ``release()`` lets them close their
    sessions. The parent can measure the system between the phases.
    """

    def __init__(self, plans: Sequence[LoadPlan]) -> None:
        self.plans = list(plans)
        ctx = mp.get_context("spawn")
        self._reports = ctx.Queue()
        self._results = ctx.Queue()
        self._go = ctx.Event()
        self._release = ctx.Event()
        self._start_at = ctx.Value("d", 0.0)
        self._processes: list[SpawnProcess] = [
            ctx.Process(target=_process_main, name=f"parley-load-{i}", daemon=True,
                        args=(plan, i, self._reports, self._go, self._start_at, self._results,
                              self._release))
            for i, plan in enumerate(self.plans)
        ]  # fmt: skip

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def connect(self, timeout: float = 300) -> list[ConnectReport]:
        for process in self._processes:
            process.start()
        return self._collect(self._reports, timeout, "connect")

    def go(self, start_at: float) -> None:
        self._start_at.value = start_at
        self._go.set()

    def results(self, timeout: float) -> list[LoadResult]:
        found: list[LoadResult] = self._collect(self._results, timeout, "finish")
        return sorted(found, key=lambda r: r.process)

    def release(self) -> None:
        """Let the processes close their sessions and end."""
        self._release.set()

    def _collect(self, source: Any, timeout: float, what: str) -> list[Any]:
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(found) < len(self._processes):
            try:
                found.append(source.get(timeout=0.5))
            except queue.Empty:
                dead = [p for p in self._processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"load process {dead[0].name} died with exit code "
                        f"{dead[0].exitcode} before it could {what}"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"load processes did not {what} within {timeout:.0f}s"
                    ) from None
        return found

    def close(self) -> None:
        """Stop the processes (they end on their own once released)."""
        self.release()
        for process in self._processes:
            if process.pid is not None:
                process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
