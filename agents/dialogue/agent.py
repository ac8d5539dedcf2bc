"""The dialogue step: ``chat.understood`` (+ ``knowledge.results``, ``actions.results``,
``handoff.events``, ``conversation.notices``) → ``chat.outbound`` (+ ``knowledge.requests``,
``actions.requests``, ``handoff.events``, ``conversation.notices``).

It runs inside the conversation agent (agents/conversation.py), right after the
NLU step, on the ChatUnderstood events that step produced and on the knowledge
agent's answers. It is the only writer of a conversation's replies, so reply
sequence numbers stay gap-free and ordered. Per batch (one Lua call per Redis
primary at each step, whatever the batch size: agents/dialogue/sessions.py):

1. load the sessions of the batch's conversations and the idempotency records
   of its event ids, and meanwhile look the batch's knowledge questions up in
   the knowledge base's exact-answer cache;
2. run the bot's dialogue manager on each event in order (:mod:`agents.dialogue.turns`),
   carrying session changes forward within the batch: what the bot says, and what
   its flow waits for — a question for the knowledge agent (unless the cache already
   holds the answer: the flow then goes on at once, two broker hops sooner) or an
   action's result;
3. produce the knowledge and action requests and the handoff events (a request for a
   person, a message relayed to one: agents/dialogue/handoff.py), put handed-over
   conversations in their tenant's queue, and wait until the broker holds them;
4. record every new turn atomically (session with its dialogue state + idempotency
   record + outbox);
5. produce the replies, oldest first, and wait until the broker holds them;
6. move each conversation's ``produced_seq`` forward: in the background, while
   the agent goes on with the next batches (``agents.dialogue.sessions.ProducedMarks``).

A reprocessed event (the worker died before its offsets were committed) is
found in step 1 and skipped. What the dead worker recorded but never got onto
the broker is the outbox range ``(produced_seq, reply_seq]`` of its
conversation; step 5 produces that range first, in seq order, with the
original ``seq`` and ``event_id`` (gateways write a ``seq`` once per socket, so
a user never sees a reply twice). The range is resent as a whole because the
events that caused it arrive from two topics in no fixed order. It may also
hold replies that did reach the broker, when the worker died before step 6
wrote their ``produced_seq``; they are sent again like the others. While step
6 is under way, the step itself knows how far each conversation's replies
went, and owes nothing for them. A knowledge
request (or an action request) is produced before its turn is recorded, so a crash
can only repeat it; the answer (or result) carries an id derived from the request's,
and a repeated one is dropped here like any repeated event. An action may so run
twice: actions get the request's event id as their idempotency key.

A batch that fails because Redis or the broker is unavailable is processed
again until it succeeds (``streams.batching.process_until_done``); every step
above is idempotent, so a repeat only re-sends what may not have arrived.

Slow work happens elsewhere, never here: knowledge retrieval (and an LLM call) in
the knowledge agent, business actions in the action agent (agents/actions/). Their
answers come back on ``knowledge.results`` and ``actions.results``, keyed and
partitioned like the conversation, and resume the flow that waited for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from faust.types import EventT

from agents.actions.records import read_result
from agents.bots.metrics import count_bot_turns
from agents.degradation import TenantLevels, kept_record
from agents.dialogue.handoff import HandoffWrites, count_turns, expire_due
from agents.dialogue.proactive import Visits, count_notices
from agents.dialogue.sessions import AppliedTurn, ProducedMarks, SessionStore
from agents.dialogue.state import DialogueState
from agents.dialogue.turns import (
    Answer,
    Incoming,
    Kind,
    ManagerFor,
    ModelFor,
    Turn,
    decide_turns,
    handoff_command,
    handoff_incoming,
    knowledge_question,
    notice_incoming,
)
from agents.knowledge.cache import AnswerCache
from kernel.errors import DecodeError
from streams.app import WorkerContext, produce, raw_topic
from streams.handoff import HandoffStore
from streams.keys import ConversationKeys
from streams.proactive import CustomerIndex
from streams.topics import CONVERSATION_NOTICES, ENVELOPE_FIELDS
from streams.usage import KNOWLEDGE_REQUESTS, UsageCounter

__all__ = ["DialogueStep", "count_cached_answers", "knowledge_result_emitter",
           "register_handoff_expiry"]

#: HandoffEvent types the conversation agent writes itself: read back, they are skipped.
_OWN_HANDOFF_EVENTS = frozenset({"requested", "user_message"})

logger = logging.getLogger(__name__)


class DialogueStep:
    """The dialogue step of the conversation agent (agents/conversation.py).

    ``await step(batch)`` runs steps 1 to 6 above for a batch of :class:`Incoming`:
    the ChatUnderstood events the NLU step made of the batch's messages
    (:meth:`understood`), the knowledge agent's answers and the actions' results
    (:meth:`decode_result`), in the order the agent took them. ``managers``: which
    bot's dialogue manager decides a conversation's turn; ``answers``: the knowledge
    agent's answer cache, consulted before asking it; ``levels``: the tenants' degradation
    levels (agents/dialogue/degradation.py), whose maintenance mode keeps messages in Redis;
    ``models``: the NLU model of each bot version held, which understands a message again
    when its turn runs on another version than the one the NLU step routed it to (a task
    begun before a canary switch: :func:`agents.dialogue.turns.understood_on`).
    """

    def __init__(self, ctx: WorkerContext, managers: ManagerFor,
                 answers: AnswerCache | None = None,
                 levels: TenantLevels | None = None, *,
                 models: ModelFor | None = None) -> None:
        self._ctx = ctx
        self._levels = levels
        self._managers = managers
        self._models = models
        self._answers = answers
        self._results = {
            ctx.knowledge_results.get_topic_name():
                (Kind.KNOWLEDGE, ctx.codec("knowledge_result", ctx.knowledge_results)),
            ctx.actions_results.get_topic_name():
                (Kind.ACTION, ctx.codec("action_result", ctx.actions_results)),
            ctx.handoff_events.get_topic_name():
                (Kind.HANDOFF, ctx.codec("handoff_event", ctx.handoff_events)),
        }
        # Callbacks and business events (agents/dialogue/proactive.py).
        self.notices = raw_topic(ctx.app, ctx.settings.topic(CONVERSATION_NOTICES))
        self._notices = ctx.codec("conversation_notice", self.notices)
        self._results[self.notices.get_topic_name()] = (Kind.NOTICE, self._notices)
        self._visits = Visits(CustomerIndex(ctx.store.redis, open_s=ctx.settings.session_ttl_s),
                              self._publish_notices)
        self._handoffs = ctx.codec("handoff_event", ctx.handoff_events)
        self.handoff_store = HandoffStore(ctx.store.redis, ttl_s=ctx.settings.session_ttl_s)
        self._handoff_writes = HandoffWrites(self.handoff_store)
        self._requests = ctx.codec("knowledge_request", ctx.knowledge_requests)
        self._actions = ctx.codec("action_request", ctx.actions_requests)
        self._replies = ctx.codec("bot_reply", ctx.outbound)
        self._sessions = SessionStore(ctx.store.redis, ttl_s=ctx.settings.session_ttl_s,
                                      outbox_size=ctx.settings.outbox_size)
        self._marks = ProducedMarks(self._sessions)

    @staticmethod
    def understood(msg: dict[str, Any]) -> Incoming:
        """A ChatUnderstood, as the NLU step produced it."""
        return _incoming(msg, Kind.MESSAGE)

    async def decode_result(self, event: EventT) -> Incoming | None:
        """A ``knowledge.results``, ``actions.results`` or ``handoff.events`` event; None
        when it is undecodable (or a result that contradicts itself), after sending it to
        its topic's dead-letter topic, and for the handoff events this step wrote itself."""
        kind, codec = self._results[event.message.topic]
        try:
            msg = codec.decode(event.message.value)
            if kind is Kind.HANDOFF:
                if msg["type"] in _OWN_HANDOFF_EVENTS:
                    return None
                handoff_command(msg)  # raises ValueError on malformed slots
                return handoff_incoming(msg)
            if kind is Kind.NOTICE:
                return notice_incoming(msg)  # raises ValueError on malformed data
            if kind is Kind.ACTION:
                read_result(msg)  # raises ValueError on a malformed result
            return _incoming(msg, kind)
        except (DecodeError, ValueError, KeyError) as exc:
            await self._ctx.dead_letters.send(event, exc, "conversation")
            return None

    async def __call__(self, batch: Sequence[Incoming]) -> None:
        ctx, store = self._ctx, self._sessions
        produced = self._marks.pending()
        (sessions, seen), cached = await asyncio.gather(
            store.load([(i.keys, i.msg["event_id"]) for i in batch]),
            self._cached_answers(batch))
        self._marks.apply(produced, sessions)
        if seen:
            logger.info("dialogue.events.reprocessed count=%d", len(seen))
        owed = await store.unproduced(sessions.values())
        if owed:
            logger.info("dialogue.replies.resent count=%d", len(owed))
        decided = decide_turns(batch, sessions, seen, cached, self._managers,
                               self._levels.level if self._levels else None, self._models)
        questions = [(t.keys, self._requests.encode(t.question))
                     for t in decided if t.question is not None]
        calls = [(t.keys, self._actions.encode(t.action))
                 for t in decided if t.action is not None]
        encode_reply = self._replies.encode
        turns = [AppliedTurn(t.keys, t.event_id, t.session.last_seq, t.session.reply_seq,
                             b"" if t.reply is None else encode_reply(t.reply), t.session.turns,
                             t.session.dialogue)
                 for t in decided]

        handoffs = [(t.keys, self._handoffs.encode(t.handoff))
                     for t in decided if t.handoff is not None]
        await asyncio.gather(_produce(ctx.knowledge_requests, questions),
                             _produce(ctx.actions_requests, calls),
                             _produce(ctx.handoff_events, handoffs),
                             self._handoff_writes(decided), self._keep(decided))
        applied = await store.apply(turns)
        count_cached_answers(self._ctx.usage, decided, applied, cached)
        count_turns(decided, applied)
        count_notices(decided, applied)
        count_bot_turns([(t.keys.tenant_id, t.bot_version) for t in decided], applied)
        await self._visits(decided, applied, {i.msg["event_id"]: i.msg for i in batch
                                              if i.kind is Kind.MESSAGE})
        to_send = owed + [(t.keys, t.reply_seq, t.reply)
                          for t, ok in zip(turns, applied, strict=True) if ok and t.reply]
        await _produce(ctx.outbound, [(keys, value) for keys, _, value in to_send])
        self._marks.record((keys, seq) for keys, seq, _ in to_send)

    async def _keep(self, decided: Sequence[Turn]) -> None:
        """Keep the messages of tenants in maintenance, before their turns are recorded
        (a crash in between keeps one twice; its replay is then skipped as a repeat)."""
        deferred = [t for t in decided if t.deferred is not None]
        if not deferred or self._levels is None:
            return
        encode = self._ctx.codec("chat_message", self._ctx.inbound).encode
        await self._levels.store.defer([
            (t.keys.tenant_id, kept_record(t.keys.conversation_id, encode(kept_message(msg))))
            for t in deferred if (msg := t.deferred) is not None])

    async def expire_handoffs(self) -> int:
        """Hand back the conversations whose handoff request waited too long (see
        :func:`agents.dialogue.handoff.expire_due`); returns how many."""
        async def publish(events: Sequence[tuple[str, dict[str, Any]]]) -> None:
            await produce(self._ctx.handoff_events, [
                (conversation.encode(), self._handoffs.encode(event))
                for conversation, event in events])

        return await expire_due(self.handoff_store, publish)

    async def _publish_notices(self, notices: Sequence[tuple[str, dict[str, Any]]]) -> None:
        await produce(self.notices, [(conversation.encode(), self._notices.encode(notice))
                                     for conversation, notice in notices])

    async def marked(self) -> None:
        """Wait until the ``produced_seq`` writes (step 6) are done."""
        await self._marks.written()

    async def _cached_answers(self, batch: Sequence[Incoming]) -> dict[str, Answer]:
        """Cached answers to the questions the batch's messages may put to the
        knowledge base, by event id (looked up while the sessions load)."""
        if self._answers is None:
            return {}
        managers, fresh = self._managers, DialogueState()
        asked = [(item.msg["event_id"], item.keys.tenant_id, question)
                 for item in batch if item.kind is Kind.MESSAGE
                 and (question := knowledge_question(
                     managers(item.keys.tenant_id, item.msg.get("user_id", ""), fresh),
                     item.msg)) is not None]
        if not asked:
            return {}
        found = await self._answers.get_exact_many([(tenant, q, None) for _, tenant, q in asked])
        hits = {event_id: Answer(answer.text, tuple(answer.sources))
                for (event_id, _, _), (_, answer) in zip(asked, found, strict=True)
                if answer is not None}
        if hits:
            logger.debug("dialogue.knowledge.cached count=%d of=%d", len(hits), len(asked))
        return hits


def count_cached_answers(usage: UsageCounter, decided: Sequence[Turn],
                         applied: Sequence[bool], cached: Mapping[str, Answer]) -> None:
    """Bill a ``knowledge_requests`` for each recorded user message answered here from
    the knowledge agent's cache (the agent never sees those questions). A message that
    had a cached answer and sent no knowledge request is taken as answered from it: the
    flow asked and the cache answered (exact in nearly every case; a flow that could
    have asked but did not, on text that is a cached question, is counted too; a message
    kept for later in maintenance is not)."""
    for turn, ok in zip(decided, applied, strict=True):
        if (ok and turn.kind is Kind.MESSAGE and turn.question is None
                and turn.deferred is None and turn.event_id in cached):
            usage.count(turn.keys.tenant_id, KNOWLEDGE_REQUESTS)


def kept_message(msg: dict[str, Any]) -> dict[str, Any]:
    """The ChatMessage a kept ChatUnderstood goes back on ``chat.inbound`` as, under the
    event id ``<id>.d`` (the original is recorded as answered by the maintenance notice)."""
    payload = msg["payload"]
    return {**{k: msg[k] for k in ENVELOPE_FIELDS}, "event_id": f"{msg['event_id']}.d",
            "seq": msg["seq"], "timestamp": msg["timestamp"],
            "payload": {"text": payload["text"], "client_msg_id": payload["client_msg_id"],
                        "locale": payload.get("locale"),
                        "tier": payload.get("tier", "default"),
                        "roles": list(payload.get("roles", []))}}


def _incoming(msg: dict[str, Any], kind: Kind) -> Incoming:
    return Incoming(ConversationKeys(msg["tenant_id"], msg["conversation_id"]), msg, kind)


async def _produce(topic: Any, records: Sequence[tuple[ConversationKeys, bytes]]) -> None:
    """Send in order, keyed by conversation; return once the broker holds every record."""
    await produce(topic, [(keys.conversation_id.encode(), value) for keys, value in records])


def register_handoff_expiry(ctx: WorkerContext, step: DialogueStep,
                            interval_s: float = 5.0) -> None:
    """Every ``interval_s``, expire the handoff requests that waited too long (every worker
    runs it; a request is taken by one of them, atomically)."""

    @ctx.app.timer(interval_s, name=f"{ctx.settings.topic_prefix}handoff_expiry")
    async def expire_handoffs() -> None:
        try:
            await step.expire_handoffs()
        except Exception:  # Redis or the broker unavailable: the next tick tries again
            logger.exception("handoff.expiry.failed")


def knowledge_result_emitter(ctx: WorkerContext) -> Any:
    """The ``emit_reply`` the knowledge agent calls: its answer, as a KnowledgeResult."""
    codec = ctx.codec("knowledge_result", ctx.knowledge_results)

    async def emit(request: dict[str, Any], text: str, sources: list[str]) -> None:
        result = {
            **{k: request[k] for k in ENVELOPE_FIELDS},
            "event_id": f"{request['event_id']}.k",
            "timestamp": int(time.time() * 1000),
            "payload": {"text": text, "sources": sources, "in_reply_to": request["event_id"],
                        "client_msg_id": request["payload"].get("client_msg_id", "")},
        }
        keys = ConversationKeys(request["tenant_id"], request["conversation_id"])
        await _produce(ctx.knowledge_results, [(keys, codec.encode(result))])

    return emit
