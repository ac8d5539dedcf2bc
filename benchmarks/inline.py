"""The inline baseline: the same model and policy in one process, no bus, no Redis.

A WebSocket server speaking the gateway's frame protocol (gateway/protocol.py).
Each message is acknowledged at once, queued, and handled in micro-batches the
way the worker does it — one ``understand_batch`` call per batch (same batch
size and wait settings), then :class:`~agents.dialogue.policy.RuleBasedPolicy`
over an in-memory :class:`~agents.dialogue.sessions.Session`; a question the policy hands
to the knowledge base is answered by the same
:class:`~agents.knowledge.service.KnowledgeService` the knowledge agent uses
(with an in-process exact-question cache standing in for the Redis one); an action
(the demo's CRM calls) succeeds at once without outputs, no business system being
attached. The reply is written straight back to the socket. It bounds what the pipeline could
reach on the same machine: the pipeline's figures are reported as ratios to these.

Run with ``python -m benchmarks.inline --port 8765`` (``parley bench e2e
--baseline inline`` starts it for you).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import click
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agents.dialogue.loader import load_bot
from agents.dialogue.manager import (
    ActionResult,
    AskKnowledge,
    CallAction,
    DialogueManager,
    Outcome,
    UserTurn,
)
from agents.dialogue.state import DialogueState
from agents.dialogue.turns import Answer, reply_payload
from agents.knowledge.demo import resolve_kb_index
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.service import KnowledgeService
from agents.knowledge.settings import KnowledgeSettings
from agents.nlu.agent import Understander, understood_payload
from examples import bot_files
from gateway.protocol import (
    FrameError,
    MessageFrame,
    PingFrame,
    ack_frame,
    encode,
    error_frame,
    parse_client_frame,
    parse_connection_params,
    reply_frame,
    welcome_frame,
)
from kernel.logs import configure_logging
from kernel.runtime import collect_young_less_often, run_until_signalled
from kernel.settings import Settings
from parley.worker import load_understander
from streams.keys import ConversationKeys, validate_id

__all__ = ["InlineServer", "serve_inline"]

logger = logging.getLogger(__name__)

#: The tenant every inline conversation belongs to (the demo domain's).
INLINE_TENANT = "demo"
_MAX_REQUESTS = 4  # requests answered for one message before giving up on a looping flow


@dataclass(slots=True)
class _Pending:
    ws: ServerConnection
    keys: ConversationKeys
    user_id: str
    event_id: str
    seq: int
    frame: MessageFrame


class InlineServer:
    """Gateway protocol in front of a direct model + policy call, in one process."""

    def __init__(
        self,
        model: Understander,
        manager: DialogueManager,
        settings: Settings,
        knowledge: KnowledgeService | None = None,
    ) -> None:
        self.model = model
        self.manager = manager
        self.settings = settings
        self.knowledge = knowledge
        self.answers: dict[tuple[str, str], Answer] = {}
        self.states: dict[ConversationKeys, DialogueState] = {}
        self.reply_seq: dict[ConversationKeys, int] = {}
        self.inbound_seq: dict[ConversationKeys, int] = {}
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._server: Server | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work())
        self._server = await serve(
            self._handle, self.settings.gateway_host, self.settings.gateway_port,
            process_request=self._process_request, max_size=self.settings.max_frame_bytes,
            compression=None, ping_interval=20, ping_timeout=20,
        )  # fmt: skip
        logger.info("inline.started port=%s", self.settings.gateway_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.knowledge is not None:
            await self.knowledge.aclose()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ws":
            return None
        if path in ("/healthz", "/readyz"):
            return conn.respond(HTTPStatus.OK, "ok\n")
        return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        try:
            # Nothing is kept to replay. No credentials are checked: the baseline bounds
            # the pipeline's speed, one tenant (the demo's) and the user the URL names.
            params = parse_connection_params(ws.request.path)
            keys = ConversationKeys(INLINE_TENANT, params.conversation_id)
            user = validate_id("user", parse_qs(urlsplit(ws.request.path).query).get(
                "user", ["anonymous"])[0])
        except ValueError as exc:
            await ws.send(error_frame("bad_request", str(exc)))
            await ws.close(1008, "bad connection parameters")
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(welcome_frame(keys.tenant_id, user, keys.conversation_id, "inline"))
            async for data in ws:
                await self._on_frame(ws, keys, user, data)

    async def _on_frame(
        self, ws: ServerConnection, keys: ConversationKeys, user: str, data: str | bytes
    ) -> None:
        try:
            frame = parse_client_frame(data, self.settings.max_text_bytes)
        except FrameError as exc:
            await ws.send(error_frame(exc.code, exc.message, exc.client_msg_id))
            return
        if isinstance(frame, PingFrame):
            await ws.send(encode({"type": "pong"}))
        if not isinstance(frame, MessageFrame):
            return  # resume and typing: nothing is kept to replay, nothing to forward
        seq = self.inbound_seq.get(keys, 0) + 1
        self.inbound_seq[keys] = seq
        event_id = uuid.uuid4().hex
        await ws.send(ack_frame(frame.client_msg_id, event_id, seq))
        self.queue.put_nowait(_Pending(ws, keys, user, event_id, seq, frame))

    async def _work(self) -> None:
        # Batches the way the pipeline's agents do (streams/batching.py): whatever
        # queued up while the previous batch was processed, without waiting for more.
        size = self.settings.worker_batch_size
        while True:
            batch = [await self.queue.get()]
            while len(batch) < size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._process(batch)
            except Exception:
                logger.exception("inline.batch.failed size=%d", len(batch))

    async def _process(self, batch: list[_Pending]) -> None:
        results = self.model.understand_batch([p.frame.text for p in batch])
        manager = self.manager
        for pending, result in zip(batch, results, strict=True):
            keys, now_ms = pending.keys, int(time.time() * 1000)
            payload = understood_payload(pending.frame.text, pending.frame.client_msg_id, result)
            outcome = manager.step(self.states.get(keys) or DialogueState(),
                                   UserTurn.from_payload(payload), now_ms)
            for _ in range(_MAX_REQUESTS):  # a request's answer may lead to another
                if isinstance(outcome.request, AskKnowledge):
                    answer = await self._ask(keys.tenant_id, outcome.request.question)
                    more = manager.resume_knowledge(outcome.state, answer.text, answer.sources,
                                                    now_ms)
                elif isinstance(outcome.request, CallAction):
                    # No business system here: an action succeeds at once, without outputs
                    # (the pipeline's action agent calls the CRM: a bound, as for knowledge)
                    more = manager.resume_action(outcome.state,
                                                 ActionResult(outcome.request.name, True), now_ms)
                else:
                    break
                outcome = Outcome(more.state, outcome.utterances + more.utterances, more.request)
            self.states[keys] = outcome.state
            if not outcome.utterances:
                continue
            seq = self.reply_seq[keys] = self.reply_seq.get(keys, 0) + 1
            reply = {"event_id": f"{pending.event_id}.r", "seq": seq,
                     "payload": reply_payload(outcome.utterances, pending.event_id,
                                              pending.frame.client_msg_id)}
            with contextlib.suppress(ConnectionClosed):
                await pending.ws.send(reply_frame(reply))

    async def _ask(self, tenant: str, question: str) -> Answer:
        """What the knowledge agent would answer (exact repeats come from a cache)."""
        cached = self.answers.get((tenant, question))
        if cached is not None:
            return cached
        if self.knowledge is None:
            return Answer("Sorry, I cannot look that up right now.")
        found = await self.knowledge.answer(tenant, question)
        answer = Answer(found.text, tuple(found.sources))
        self.answers[(tenant, question)] = answer
        return answer


def _load_knowledge(settings: Settings) -> KnowledgeService | None:
    """The knowledge service the worker would run (no Redis: the cache is in-process)."""
    corpus = bot_files(settings.bot_dir).knowledge
    index = resolve_kb_index(settings, corpus) if corpus.is_file() else None
    if index is None:  # the knowledge agent is off, or the bot has no documents
        return None
    return KnowledgeService.from_settings(KnowledgeBase.open(index), KnowledgeSettings.from_env(),
                                          redis=None)


@click.command("inline-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="NLU model folder (default: PARLEY_NLU_MODEL or the demo model).",
)
def serve_inline(host: str, port: int, model_dir: Path | None) -> None:
    """Serve the inline baseline: gateway protocol, model and policy in one process."""
    settings = Settings.from_env(None, gateway_host=host, gateway_port=port)
    if model_dir is not None:
        settings = settings.replace(nlu_model_dir=str(model_dir))
    configure_logging("bench-inline", settings.log_level, settings.log_json)
    bot, knowledge = bot_files(settings.bot_dir), _load_knowledge(settings)
    served = load_bot(bot.folder)
    if knowledge is None:
        served = replace(served, knowledge_files=())
    server = InlineServer(load_understander(settings, served), DialogueManager(served), settings,
                          knowledge)
    collect_young_less_often()  # as the gateway and the workers do
    run_until_signalled(server.start, server.close)


if __name__ == "__main__":
    serve_inline()
