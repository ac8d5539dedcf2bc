"""What the dialogue step decides for a batch, without I/O.

:func:`decide_turns` takes a batch's decoded events and the sessions loaded for
them, runs the bot's dialogue manager (:mod:`agents.dialogue.manager`) on each new
event in order, and returns each conversation's session after it (with its dialogue
state record) and the events the turn sends: a BotReply when the bot says something,
a KnowledgeRequest when the flow waits for the knowledge agent (unless a cached answer
lets it go on at once), an ActionRequest when it waits for an action. A knowledge
agent's answer (KnowledgeResult) and an action's result (ActionResult) resume the flow
that waited for them. A console command (a HandoffEvent: claimed, agent_message, note,
released, closed, expired) is applied like a message, in the conversation's order; a turn
that hands over, or relays a message to the person holding the conversation, sends a
HandoffEvent (requested, user_message). The step (agents/dialogue/agent.py) loads,
encodes, produces and records around it. At debug level each decision is logged with its
message's trace id (``dialogue.turn.decided``).

Every decision is a function of the stored state and the event: the manager's clock is
the event's own timestamp, so a reprocessed event decides the same.

Which bot decides (``managers``): the tenant's, in the version the conversation's
state recorded while a flow runs, else the one the user is routed to — the tenant's
canary for the users in its percentage, its stable version for the others
(agents/bots/registry.py says the rule; the event's ``user_id`` routes). A state
whose flows the deciding version does not have (the recorded version is gone) keeps
its slots and leaves those flows (the manager drops them): the conversation goes on.

Which model's understanding it decides on: the deciding version's. The NLU step ran
before the state was read and used the model of the version the user is routed to
*now*; a message inside a task begun on another version (a canary arrived, was
promoted or rolled back since) is understood again with the model of the version
the turn runs on (``models``), so a flow gets its own model's intents, entities and
thresholds. Comparing the ChatUnderstood's ``model_version`` with that model's is
all the common path pays. The ChatUnderstood on ``chat.understood`` keeps what the
routed model said; the turn's reply and state follow the deciding model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple

from agents.actions.records import action_request, read_result
from agents.dialogue.degradation import (
    announce,
    level_told,
    maintenance_outcome,
    without_waiting,
)
from agents.dialogue.manager import (
    ActionResult,
    AskKnowledge,
    CallAction,
    DialogueManager,
    HandoffCommand,
    HandoffNotice,
    Outcome,
    UserTurn,
    Utterance,
)
from agents.dialogue.sessions import Session
from agents.dialogue.state import DialogueState, StateFormatError
from agents.nlu.agent import Understander, understood_again
from streams.degradation import Level, TenantLevel
from streams.handoff import handoff_event
from streams.keys import ConversationKeys
from streams.topics import ENVELOPE_FIELDS
from streams.turn_state import is_bot_tester, turn_debug_json

__all__ = ["Answer", "Incoming", "Kind", "LevelFor", "ManagerFor", "ModelFor", "Turn",
           "decide_turns", "handoff_command", "handoff_incoming", "knowledge_question",
           "notice_incoming", "question_event", "reply_event", "reply_payload",
           "understood_on"]

logger = logging.getLogger(__name__)


#: The dialogue manager a conversation's next turn runs on: (tenant id, the event's user
#: id, the conversation's state) → manager.
ManagerFor = Callable[[str, str, DialogueState], DialogueManager]
#: The NLU model of one of a tenant's bot versions: (tenant id, bot version) → its model,
#: None when this worker does not hold that version.
ModelFor = Callable[[str, str], Understander | None]
#: A tenant's degradation level now (streams/degradation.py).
LevelFor = Callable[[str], TenantLevel]


class Kind(Enum):
    """Where an event of the dialogue step's input comes from."""

    MESSAGE = "message"      # a user message, as the NLU step understood it (ChatUnderstood)
    KNOWLEDGE = "knowledge"  # the knowledge agent's answer (knowledge.results)
    ACTION = "action"        # an action's result (actions.results)
    HANDOFF = "handoff"      # a console command (handoff.events)
    NOTICE = "notice"        # a callback or business event to say (conversation.notices)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One event of the dialogue step's input."""

    keys: ConversationKeys
    msg: dict[str, Any]
    kind: Kind


@dataclass(frozen=True, slots=True)
class Answer:
    """A knowledge answer: from the knowledge agent, or from its cache."""

    text: str
    sources: tuple[str, ...] = ()


class Turn(NamedTuple):
    """A new event's outcome: its conversation's session after it, and what it sends."""

    keys: ConversationKeys
    event_id: str
    session: Session
    reply: dict[str, Any] | None     # a BotReply, numbered session.reply_seq
    question: dict[str, Any] | None  # a KnowledgeRequest, answered by a later event
    action: dict[str, Any] | None    # an ActionRequest, answered by a later event
    handoff: dict[str, Any] | None = None  # a HandoffEvent (requested, user_message)
    notice: HandoffNotice | None = None    # what the turn changed in a handoff (metrics)
    kind: Kind = Kind.MESSAGE              # what the event was
    deferred: dict[str, Any] | None = None  # a message kept in maintenance (level 4)
    bot_version: str = ""                  # the bot version that decided it (metrics)


def knowledge_question(manager: DialogueManager, msg: Mapping[str, Any]) -> str | None:
    """The question a user message may put to the knowledge base, whatever the
    conversation's state: what to look up in the answer cache before deciding."""
    turn = UserTurn.from_payload(msg["payload"], msg["channel"])
    return turn.text if manager.may_ask_knowledge(turn) else None


def decide_turns(
    batch: Sequence[Incoming],
    sessions: Mapping[ConversationKeys, Session],
    seen: Container[str],
    cached: Mapping[str, Answer],
    managers: ManagerFor,
    levels: LevelFor | None = None,
    models: ModelFor | None = None,
) -> list[Turn]:
    """Decide each new event of ``batch`` in order, carrying sessions forward.

    ``sessions`` holds every conversation of the batch as loaded (it is not
    changed); ``seen`` the event ids already recorded, which are skipped, as is an
    event repeated within the batch; ``cached`` the cached answers to the batch's
    knowledge questions, by event id; ``levels`` the tenants' degradation levels
    (agents/dialogue/degradation.py says what each changes; None: all full service);
    ``models`` the NLU models of the versions a turn may run on, to understand a
    message again when another version's model understood it (:func:`understood_on`;
    None: every message is decided as the NLU step understood it).
    """
    current = dict(sessions)
    debug = logger.isEnabledFor(logging.DEBUG)
    turns: list[Turn] = []
    decided: set[str] = set()  # a reprocessed event may also repeat within one batch
    for item in batch:
        keys, msg, event_id = item.keys, item.msg, item.msg["event_id"]
        session = current[keys]
        if event_id in decided or event_id in seen:
            continue
        decided.add(event_id)
        state = _state_of(session)
        manager = managers(keys.tenant_id, msg.get("user_id", ""), state)
        if item.kind is Kind.MESSAGE and models is not None:
            item = understood_on(item, models(keys.tenant_id, manager.bot.version))
            msg = item.msg
        level = levels(keys.tenant_id) if levels is not None else _FULL
        outcome, deferred = _degraded(manager, state, item, cached.get(event_id), level)
        after = outcome.state
        if outcome.handoff:  # a new request: it is named after the turn that made it
            after = replace(after, handoff_request=event_id)
        tester = _shows_state(item, state)
        if tester or state.tester:
            after = _tester_marks(after, item, tester, state, outcome)
        counted, last_seq = session.turns, session.last_seq
        if item.kind is Kind.MESSAGE:  # a user message counts a turn
            counted, last_seq = counted + 1, msg["seq"]
        reply_seq = session.reply_seq + (1 if outcome.utterances else 0)
        session = replace(session, turns=counted, last_seq=last_seq, reply_seq=reply_seq,
                          dialogue=after.to_bytes())
        request = outcome.request
        turn = Turn(
            keys, event_id, session,
            reply_event(msg, reply_seq, outcome.utterances,
                        turn_end=request is None and item.kind in _TURN_KINDS,
                        state=after if tester else None) if outcome.utterances else None,
            question_event(msg, request) if isinstance(request, AskKnowledge) else None,
            action_request(msg, request.name, request.inputs,
                           bot_version=outcome.state.bot_version)
            if isinstance(request, CallAction) else None,
            _handoff_event(msg, after, outcome.notice), outcome.notice, item.kind,
            msg if deferred else None, outcome.state.bot_version,
        )  # fmt: skip
        current[keys] = session
        turns.append(turn)
        if debug:
            state = outcome.state
            logger.debug("dialogue.turn.decided event_id=%s says=%d waits_for=%s flow=%s "
                         "requested=%s reply_seq=%d bot_version=%s", event_id,
                         len(outcome.utterances), type(request).__name__ if request else "-",
                         state.active_flow, state.requested_slot, reply_seq,
                         state.bot_version[:12], extra={"trace_id": msg["trace_id"]})
    return turns


def understood_on(item: Incoming, model: Understander | None) -> Incoming:
    """A user message as the bot version its turn runs on understands it: as it came when
    ``model`` (that version's) is the model that understood it, or is None (nothing to
    understand it with: the version went between the two look-ups); else understood
    again with ``model`` — a message inside a task begun on another version than the one
    the user is routed to now. A recorded version the worker no longer holds is left as
    it came: its turn runs on the user's version, whose model understood the message."""
    payload = item.msg["payload"]
    if model is None or model.version == payload.get("model_version"):
        return item
    again = understood_again(model, item.msg)
    logger.info("dialogue.message.understood_again event_id=%s model=%s intent=%s was=%s "
                "intent_was=%s", item.msg["event_id"], model.version[:16],
                again["payload"]["intent"], str(payload.get("model_version", ""))[:16],
                payload.get("intent"), extra={"trace_id": item.msg.get("trace_id")})
    return replace(item, msg=again)


#: What a user's turn is made of: the message, and the result it waited for.
_TURN_KINDS = frozenset({Kind.MESSAGE, Kind.KNOWLEDGE, Kind.ACTION})


def _shows_state(item: Incoming, before: DialogueState) -> bool:
    """Whether the turn's replies carry the state after it: a message whose sender is a
    bot tester (its verified roles), or the result its turn waited for."""
    if item.kind is Kind.MESSAGE:
        return is_bot_tester(item.msg["payload"].get("roles") or ())
    return before.tester and item.kind in _TURN_KINDS


def _tester_marks(after: DialogueState, item: Incoming, tester: bool, before: DialogueState,
                  outcome: Outcome) -> DialogueState:
    """``after`` marked with whether its turn is a bot tester's and the slots the turn
    set so far (a message starts a turn; the result it waited for goes on with it)."""
    if item.kind is Kind.MESSAGE:
        return replace(after, tester=tester,
                       turn_slots=dict(outcome.slots_set) if tester else {})
    if tester:
        return replace(after, turn_slots={**before.turn_slots, **outcome.slots_set})
    return after


def _state_of(session: Session) -> DialogueState:
    if not session.dialogue:
        return DialogueState()
    try:
        return DialogueState.from_bytes(session.dialogue)
    except StateFormatError as exc:
        # Written by a newer worker during a rolling upgrade, or damaged: the conversation
        # goes on from a fresh state rather than stopping (its history is in the outbox).
        logger.warning("dialogue.state.unreadable conversation=%s error=%s",
                       session.keys.conversation_id, exc)
        return DialogueState()


def _handoff_event(msg: dict[str, Any], state: DialogueState,
                   notice: HandoffNotice | None) -> dict[str, Any] | None:
    """The HandoffEvent a turn sends: its request for a person, or the user's message
    relayed to the person holding the conversation (event ids derived from the turn's,
    so a repeated turn sends the same event again, which readers drop)."""
    if notice is None or notice.type not in ("requested", "user_message"):
        return None
    event_id, now_ms = msg["event_id"], _epoch_ms(msg["timestamp"])
    common = {"timestamp_ms": now_ms, "request_id": state.handoff_request,
              "user_id": msg["user_id"], "channel": msg["channel"]}
    if notice.type == "requested":
        return handoff_event(f"{event_id}.h", msg["tenant_id"], msg["conversation_id"],
                             "requested", reason=notice.reason, slots=notice.slots, **common)
    return handoff_event(f"{event_id}.u", msg["tenant_id"], msg["conversation_id"],
                         "user_message", text=notice.text, agent_id=notice.agent_id,
                         in_reply_to=event_id, **common)


def handoff_incoming(event: Mapping[str, Any]) -> Incoming:
    """A decoded console command (HandoffEvent) as dialogue input: the envelope its
    replies are made from (the user's channel, no inbound seq) and the command."""
    return _unasked(event, Kind.HANDOFF, handoff=dict(event))


def notice_incoming(event: Mapping[str, Any]) -> Incoming:
    """A decoded ConversationNotice (streams/proactive.py) as dialogue input: the envelope
    its reply is made from and what to say; ``ValueError`` when its data is not a JSON
    object of values."""
    data = _json_object(event, "data_json")
    return _unasked(event, Kind.NOTICE, notice={
        "kind": str(event["kind"]), "response": str(event["response"]),
        "data": {str(k): v for k, v in data.items()}})


def _unasked(event: Mapping[str, Any], kind: Kind, **extra: Any) -> Incoming:
    """Input nobody typed (a console command, a notice) in the envelope its replies are
    made from: the conversation's user and channel, no inbound seq, itself as what the
    replies answer."""
    msg = {
        "event_id": event["event_id"], "tenant_id": event["tenant_id"],
        "conversation_id": event["conversation_id"], "user_id": event["user_id"],
        "channel": event["channel"], "seq": 0, "timestamp": event["timestamp"],
        "trace_id": event["event_id"], "reply_route": "",
        "payload": {"client_msg_id": "", "in_reply_to": event["event_id"]},
        **extra,
    }
    return Incoming(ConversationKeys(event["tenant_id"], event["conversation_id"]), msg, kind)


def _json_object(event: Mapping[str, Any], field: str) -> dict[str, Any]:
    """``event[field]``, a JSON object in text (absent: empty); ``ValueError`` otherwise."""
    try:
        value = json.loads(event.get(field) or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{field} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{field} is not a JSON object")
    return value


def handoff_command(event: Mapping[str, Any]) -> HandoffCommand:
    """The command of a HandoffEvent; ``ValueError`` when its slots are not a JSON object."""
    slots = _json_object(event, "slots_json")
    return HandoffCommand(str(event["type"]), str(event["request_id"]),
                          str(event["agent_id"]), str(event["text"]), slots)


_FULL = TenantLevel(Level.FULL)


def _degraded(manager: DialogueManager, state: DialogueState, item: Incoming,
              cached: Answer | None, tenant: TenantLevel) -> tuple[Outcome, bool]:
    """The turn at the tenant's degradation level, and whether its message is kept for
    later (maintenance; a conversation a person holds goes on: no backend is involved)."""
    told, level = level_told(state), tenant.level
    if level is Level.MAINTENANCE and item.kind is Kind.MESSAGE and not state.handoff:
        return maintenance_outcome(state, told), True
    outcome = _decide(manager, state, item, cached)
    if level >= Level.STATIC or (level is Level.REDUCED and tenant.forced):
        outcome = without_waiting(manager, outcome, _epoch_ms(item.msg["timestamp"]),
                                  knowledge=level >= Level.STATIC)
    if outcome.state.handoff:
        return outcome, False  # a person speaks: no notices from the system meanwhile
    return announce(outcome, level, told), False


def _decide(manager: DialogueManager, state: DialogueState, item: Incoming,
            cached: Answer | None) -> Outcome:
    msg = item.msg
    now_ms = _epoch_ms(msg["timestamp"])
    if item.kind is Kind.HANDOFF:
        return manager.command(state, handoff_command(msg["handoff"]), now_ms)
    if item.kind is Kind.NOTICE:
        notice = msg["notice"]
        return manager.notify(state, notice["response"], notice["data"], now_ms,
                              msg["channel"])
    payload = msg["payload"]
    if item.kind is Kind.KNOWLEDGE:
        # The knowledge agent cites what it answers from; an answer without sources is
        # its refusal (agents/knowledge/answer.py), which the flow counts as unanswered.
        return manager.resume_knowledge(state, payload["text"], payload["sources"], now_ms,
                                        answered=bool(payload["sources"]))
    if item.kind is Kind.ACTION:
        _, result = read_result(msg)
        return manager.resume_action(
            state, ActionResult(result.action, result.ok, result.outputs, result.error,
                                str(result.kind) if result.kind else None), now_ms)
    outcome = manager.step(state, UserTurn.from_payload(payload, msg["channel"]), now_ms)
    if isinstance(outcome.request, AskKnowledge) and cached is not None:
        # The answer is cached: the flow goes on now, two broker hops sooner.
        more = manager.resume_knowledge(outcome.state, cached.text, cached.sources, now_ms,
                                        answered=bool(cached.sources))
        outcome = replace(more, utterances=outcome.utterances + more.utterances,
                          handoff=outcome.handoff or more.handoff,
                          slots_set={**outcome.slots_set, **more.slots_set})
    return outcome


def _epoch_ms(timestamp: datetime | int) -> int:
    """An event's ``timestamp``: Avro decodes timestamp-millis as an aware datetime."""
    if isinstance(timestamp, datetime):
        return int(timestamp.timestamp() * 1000)
    return int(timestamp)


def question_event(msg: dict[str, Any], ask: AskKnowledge) -> dict[str, Any]:
    """The KnowledgeRequest for a user message (ChatUnderstood) the flow hands on."""
    return {
        **{k: msg[k] for k in ENVELOPE_FIELDS},
        "payload": {"question": ask.question, "client_msg_id": msg["payload"]["client_msg_id"],
                    "filters": {}},
    }


def reply_event(msg: dict[str, Any], seq: int, utterances: Sequence[Utterance], *,
                turn_end: bool = False, state: DialogueState | None = None) -> dict[str, Any]:
    """The BotReply for what a turn says (its utterances, as one message).

    ``turn_end``: it is the turn's last reply (the turn waits for nothing more);
    ``state``: the dialogue state after the turn, for a bot tester only
    (streams/turn_state.py): its slots, active flow and requested slot."""
    payload = msg["payload"]
    body = reply_payload(utterances, payload.get("in_reply_to") or msg["event_id"],
                         payload.get("client_msg_id", ""))
    body["turn_end"] = turn_end
    if state is not None:
        body["debug_json"] = turn_debug_json(
            {**state.slots, **state.turn_slots}, state.active_flow, state.requested_slot,
            [(u.response, u.text) for u in utterances])
    return {
        **{k: msg[k] for k in ENVELOPE_FIELDS},
        "event_id": f"{msg['event_id']}.r",
        "seq": seq,
        "timestamp": int(time.time() * 1000),
        "payload": body,
    }


def reply_payload(utterances: Sequence[Utterance], in_reply_to: str,
                  client_msg_id: str) -> dict[str, Any]:
    """A BotReply's payload: what the bot says, in reply to which message. Several
    utterances are one message, a paragraph each; the quick replies are the last
    utterance's that has some (they answer its question)."""
    quick = next((u.quick_replies for u in reversed(utterances) if u.quick_replies), ())
    sources = list(dict.fromkeys(s for u in utterances for s in u.sources))
    return {
        "text": "\n\n".join(u.text for u in utterances if u.text),
        "in_reply_to": in_reply_to,
        "client_msg_id": client_msg_id,
        "quick_replies": list(quick),
        "sources": sources,
        "sender": utterances[-1].sender if utterances else "bot",
        "response": utterances[-1].response if utterances else "",
        "agent_id": next((u.agent_id for u in reversed(utterances) if u.agent_id), ""),
    }
