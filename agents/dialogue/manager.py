"""The dialogue manager: flows with slot filling and conversation repair, without I/O.

``DialogueManager(bot).step(state, message, now_ms)`` returns an :class:`Outcome`: the
new state, what the bot says, and at most one request the flow waits for — an
:class:`AskKnowledge` (the knowledge agent answers, then :meth:`~DialogueManager.
resume_knowledge`) or a :class:`CallAction` (an action runs off the hot path, then
:meth:`~DialogueManager.resume_action`). Every decision is a function of (state,
message, now_ms): no clock, no randomness, so a reprocessed event decides the same.

One turn, in order:

1. session: a conversation idle longer than ``session_timeout_minutes`` starts a new
   session (flows and slots cleared); ``pattern_session_start`` runs first in each session;
2. a handed-over conversation runs no flow: while it waits for a person each message gets
   ``utter_handoff_waiting``; while a person holds it each message is relayed to them
   (:class:`HandoffNotice` ``user_message``) and gets an empty ``handoff_relayed`` reply (the
   gateway counts a message in flight until it has one); a turn that arrives while an
   action or a knowledge question is pending gets ``utter_busy``;
3. a pending clarification is resolved ("which did you mean?");
4. cancel intents stop the running flows (``pattern_cancel``);
5. with a flow running: values for its slots from the message's entities, patterns and
   categorical mentions; a new value for a slot already filled is a correction
   (``pattern_correction``: the flow goes back to the step after that slot's question, so
   a confirmation asked after it is asked again); else a confident intent of another flow,
   a knowledge question or chitchat is a digression (answered, then the flow resumes at
   the same question via ``pattern_digression``); else the message is the answer to the
   question asked, and an answer that does not fit the slot's type counts an attempt
   (``max_attempts`` of them run ``pattern_cannot_handle``, which hands over);
6. without one: a knowledge question, two close flow intents (``pattern_clarification``),
   a flow's intent, chitchat, a flow whose start condition holds, or — nothing fitting —
   ``pattern_cannot_handle`` (rephrase, then hand over).

The agent console's commands (claimed, agent_message, note, released, closed, and the
expiry of a request nobody claimed) come in as :class:`HandoffCommand` through
:meth:`DialogueManager.command`, in the conversation's order like its messages.

A flow may only say that something happened after its action returned ok: on failure
its ``on_error`` response (default ``utter_action_failed``) is said and the flow ends.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agents.dialogue.domain import (
    ActionStep,
    Bot,
    BranchStep,
    CallStep,
    CollectStep,
    EndStep,
    Flow,
    HandoffStep,
    LinkStep,
    ResponseVariant,
    SayStep,
    SetSlotsStep,
    SlotSpec,
)
from agents.dialogue.slots import (
    answer_value,
    display_value,
    extract_slots,
    parse_amount,
    parse_categorical,
    parse_datetime,
    parse_number,
    parse_pattern,
)
from agents.dialogue.state import DialogueState, Frame, HistoryEntry, Pending
from streams.handoff import RELAYED

__all__ = [
    "HANDOFF_SUMMARY_SLOT",
    "PATTERN_CANCEL",
    "PATTERN_CANNOT_HANDLE",
    "PATTERN_CHITCHAT",
    "PATTERN_CLARIFICATION",
    "PATTERN_CORRECTION",
    "PATTERN_DIGRESSION",
    "PATTERN_HANDOFF_CLAIMED",
    "PATTERN_HANDOFF_CLOSED",
    "PATTERN_HANDOFF_EXPIRED",
    "PATTERN_HANDOFF_RELEASED",
    "PATTERN_SESSION_START",
    "ActionResult",
    "AskKnowledge",
    "CallAction",
    "DialogueManager",
    "HandoffCommand",
    "HandoffNotice",
    "Outcome",
    "Request",
    "UserTurn",
    "Utterance",
]

JSON = Any
PATTERN_SESSION_START = "pattern_session_start"
PATTERN_CANCEL = "pattern_cancel"
PATTERN_CORRECTION = "pattern_correction"
PATTERN_DIGRESSION = "pattern_digression"
PATTERN_CLARIFICATION = "pattern_clarification"
PATTERN_CHITCHAT = "pattern_chitchat"
PATTERN_CANNOT_HANDLE = "pattern_cannot_handle"
PATTERN_HANDOFF_CLAIMED = "pattern_handoff_claimed"
PATTERN_HANDOFF_RELEASED = "pattern_handoff_released"
PATTERN_HANDOFF_CLOSED = "pattern_handoff_closed"
PATTERN_HANDOFF_EXPIRED = "pattern_handoff_expired"
AGENT_MESSAGE = "agent_message"  # the response of a reply a person wrote
#: The slot an expired handoff request's summary goes in (when the bot declares it), for
#: ``pattern_handoff_expired`` to open a ticket with: the handed-over flow's own slots
#: were cleared when it handed over.
HANDOFF_SUMMARY_SLOT = "handoff_summary"
_MAX_NOTES = 20
_COMMANDS = frozenset({"claimed", "agent_message", "note", "released", "closed", "expired"})
_HOLDER_COMMANDS = frozenset({"agent_message", "released", "closed"})  # the holder's only
FALLBACK_COUNTER = "_fallback"
_MAX_STEPS = 200  # steps run in one turn before a looping flow is stopped


@dataclass(frozen=True, slots=True)
class UserTurn:
    """What the NLU made of one user message (the ChatUnderstood payload's fields)."""

    text: str
    intent: str = ""
    confidence: float = 1.0
    oos: bool = False
    ranking: tuple[tuple[str, float], ...] = ()
    entities: tuple[Mapping[str, Any], ...] = ()
    channel: str = ""

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], channel: str = "") -> UserTurn:
        """From a ChatUnderstood ``payload`` (schemas/chat_understood.avsc)."""
        return cls(
            text=str(payload["text"]), intent=str(payload.get("intent") or ""),
            confidence=float(payload.get("confidence", 0.0)), oos=bool(payload.get("oos")),
            ranking=tuple((str(r["intent"]), float(r["confidence"]))
                          for r in payload.get("ranking", ())),
            entities=tuple(dict(e) for e in payload.get("entities", ())), channel=channel)


@dataclass(frozen=True, slots=True)
class Utterance:
    response: str  # the response's name (``knowledge_answer`` for a knowledge answer)
    text: str
    quick_replies: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    sender: str = "bot"  # bot, agent (a person) or system
    agent_id: str = ""   # the person who wrote it (sender agent)


@dataclass(frozen=True, slots=True)
class HandoffCommand:
    """A command of the agent console (or the expiry of an unclaimed request) for the
    conversation: ``type`` is claimed, agent_message, note, released, closed or expired;
    ``request_id`` the handoff it is for (another is ignored); ``slots`` the values a
    releasing agent leaves for the bot."""

    type: str
    request_id: str
    agent_id: str = ""
    text: str = ""
    slots: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HandoffNotice:
    """What a turn changed in a handoff, for handoff.events and the metrics: ``requested``
    (the turn handed over: ``reason``, ``slots``, ``timeout_s``), ``user_message`` (a
    message relayed to the agent holding the conversation: ``text``), or a command the
    conversation took (claimed, agent_message, note, released, closed, expired;
    ``waited_ms``: how long the request waited for its claim)."""

    type: str
    reason: str = ""
    text: str = ""
    slots: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: int = 0
    agent_id: str = ""
    waited_ms: int = 0


@dataclass(frozen=True, slots=True)
class AskKnowledge:
    """Answer ``question`` from the bot's documents, then call ``resume_knowledge``."""

    question: str


#: Failure kinds that mean the business system could not be reached (``on_unavailable``).
UNREACHABLE_KINDS = frozenset({"unavailable", "timeout"})
#: A write went out and no answer came: it may have been done (``on_unknown``).
OUTCOME_UNKNOWN = "unknown"


def _failure_response(step: ActionStep, kind: str | None) -> str:
    """What a flow says when its action failed: never that nothing was done when that is
    not known (a write without an answer), "can't reach" when nothing was sent, else its
    error response."""
    if kind == OUTCOME_UNKNOWN:
        return step.on_unknown or "utter_action_outcome_unknown"
    if kind in UNREACHABLE_KINDS and step.on_unavailable:
        return step.on_unavailable
    return step.on_error or "utter_action_failed"


@dataclass(frozen=True, slots=True)
class CallAction:
    """Run the action ``name`` with ``inputs`` (slot values), then call ``resume_action``."""

    name: str
    inputs: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionResult:
    name: str
    ok: bool
    outputs: Mapping[str, JSON] = field(default_factory=dict)
    error: str | None = None
    #: Why it failed (``FailureKind`` of agents/actions: ``unavailable``, ``timeout``, ...).
    kind: str | None = None


Request = AskKnowledge | CallAction


@dataclass(frozen=True, slots=True)
class Outcome:
    state: DialogueState
    utterances: tuple[Utterance, ...] = ()
    request: Request | None = None
    handoff: bool = False  # this turn asked for a person (the state's flag was just set)
    notice: HandoffNotice | None = None  # what the turn changed in a handoff
    slots_set: Mapping[str, JSON] = field(default_factory=dict)
    """Every slot given a value during this turn, with its last value, including slots a
    flow that ended in the same turn has cleared again (what a test's ``slot_was_set``
    checks)."""


class _Slots(dict[str, JSON]):
    """The slots being changed in one turn, remembering every value set."""

    def __init__(self, initial: Mapping[str, JSON]) -> None:
        super().__init__(initial)
        self.set_now: dict[str, JSON] = {}

    def __setitem__(self, key: str, value: JSON) -> None:
        super().__setitem__(key, value)
        if value is not None:
            self.set_now[key] = value

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class _Run:
    """The state being changed during one turn (mutable, frozen again by ``finish``)."""

    def __init__(self, manager: DialogueManager, state: DialogueState, now_ms: int,
                 channel: str = "") -> None:
        self.m, self.bot = manager, manager.bot
        self.before = state
        self.stack: list[Frame] = _adopt(manager.bot, state.stack)
        self.slots = _Slots(state.slots)
        self.requested = state.requested_slot if state.requested_slot in self.bot.slots \
            and self.stack else None
        self.attempts: dict[str, int] = dict(state.attempts)
        self.handoff = state.handoff
        self.agent = state.agent
        self.handoff_request = state.handoff_request
        self.handoff_since_ms = state.handoff_since_ms
        self.handoff_reason = ""
        self.handoff_slots: dict[str, JSON] = {}
        self.notes = state.notes
        self.ended = state.ended
        self.notice: HandoffNotice | None = None
        self.pending = state.pending
        self.history: list[HistoryEntry] = list(state.history)
        self.sessions = state.sessions
        self.now_ms = now_ms
        self.channel = channel
        self.said: list[Utterance] = []
        self.request: Request | None = None
        self.steps_run = 0

    # -- frames -------------------------------------------------------------------------

    def flow(self, frame: Frame) -> Flow:
        return self.bot.flows[frame.flow]

    def user_frame_index(self) -> int | None:
        """The index of the topmost frame of a builder's flow (not a pattern)."""
        for i in range(len(self.stack) - 1, -1, -1):
            if not self.stack[i].flow.startswith("pattern_"):
                return i
        return None

    def set_frame(self, i: int, frame: Frame) -> None:
        self.stack[i] = frame

    def update_data(self, i: int, **changes: JSON) -> None:
        data = {k: v for k, v in {**self.stack[i].data, **changes}.items() if v is not None}
        self.stack[i] = replace(self.stack[i], data=data)

    def push(self, flow_name: str, /, **context: JSON) -> None:
        data = {"ctx": {k: v for k, v in context.items() if v is not None}} if context else {}
        self.stack.append(Frame(flow_name, 0, data))

    def advance(self, i: int, to: int | None = None) -> None:
        frame = self.stack[i]
        data = {k: v for k, v in frame.data.items() if k != "asked"}
        self.stack[i] = Frame(frame.flow, frame.step + 1 if to is None else to, data)

    # -- speaking -----------------------------------------------------------------------

    def context(self) -> dict[str, JSON]:
        ctx: dict[str, JSON] = {}
        for frame in self.stack:
            ctx.update(frame.data.get("ctx", {}))
        return ctx

    def say(self, name: str, extra: Mapping[str, JSON] | None = None,
            quick_replies: Sequence[str] = ()) -> None:
        response = self.bot.responses.get(name)
        if response is None:  # validation makes this impossible for a bot's own flows
            return
        values: dict[str, str] = {k: display_value(v) for k, v in self.slots.items()
                                  if v is not None}
        for key, value in {**self.context(), **(extra or {})}.items():
            values[key] = ", ".join(map(str, value)) if isinstance(value, list) \
                else display_value(value)
        variant = self.m.choose_variant(response.variants, self.channel, values,
                                        self.before.version + len(self.said))
        text = string.Formatter().vformat(variant.text, (), _Blank(values))
        replies = tuple(variant.quick_replies) + tuple(quick_replies)
        self.said.append(Utterance(name, text, replies))

    # -- ending -------------------------------------------------------------------------

    def finish(self, *, version_bump: bool = True) -> Outcome:
        limit = self.bot.settings.history_turns
        history = self.history + [HistoryEntry(u.sender, u.text, u.response)
                                  for u in self.said if u.text]
        requested = self.handoff and not self.before.handoff
        if requested:  # a new request: nobody holds it yet (its id is the turn's event's)
            self.agent, self.handoff_since_ms, self.handoff_request = "", self.now_ms, ""
            self.notice = HandoffNotice("requested", self.handoff_reason,
                                        slots=self.handoff_slots,
                                        timeout_s=self.bot.settings.handoff_timeout_s)
        state = DialogueState(
            version=self.before.version + (1 if version_bump else 0),
            bot_version=self.bot.version,
            stack=tuple(self.stack),
            slots={k: v for k, v in self.slots.items() if v is not None},
            requested_slot=self.requested,
            attempts={k: v for k, v in self.attempts.items() if v},
            handoff=self.handoff,
            pending=self.pending,
            history=tuple(history[-limit:]) if limit > 0 else (),
            last_activity_ms=self.now_ms,
            sessions=self.sessions,
            agent=self.agent if self.handoff else "",
            handoff_request=self.handoff_request if self.handoff else "",
            handoff_since_ms=self.handoff_since_ms if self.handoff else 0,
            notes=self.notes,
            ended=self.ended,
        )
        return Outcome(state, tuple(self.said), self.request, handoff=requested,
                       notice=self.notice, slots_set=dict(self.slots.set_now))


def _adopt(bot: Bot, stack: Sequence[Frame]) -> list[Frame]:
    """The frames of a state written by another bot version that this version can run: a
    flow that no longer exists is dropped, a step index past the flow's end ends it (a
    conversation in flight keeps working when a new bot version goes live)."""
    frames = []
    for frame in stack:
        flow = bot.flows.get(frame.flow)
        if flow is None:
            continue
        if frame.step > len(flow.steps):
            frame = replace(frame, step=len(flow.steps))
        frames.append(frame)
    return frames


class _Blank(dict[str, str]):
    """Template fields without a value render as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


@functools.lru_cache(maxsize=4096)
def _fields(text: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(text) if name)


class DialogueManager:
    """Runs a bot's flows; one instance serves every conversation of that bot version."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.settings = bot.settings

    # -- public -------------------------------------------------------------------------

    def step(self, state: DialogueState, message: UserTurn, now_ms: int) -> Outcome:
        """Decide what follows ``message`` in the conversation whose state is ``state``."""
        run = _Run(self, state, now_ms, message.channel)
        new_session = state.version == 0 and not state.sessions
        idle_ms = now_ms - state.last_activity_ms
        if state.ended or (state.last_activity_ms
                           and idle_ms > self.settings.session_timeout_s * 1000):
            new_session = True
            run.stack, run.slots, run.requested, run.attempts = [], _Slots({}), None, {}
            run.handoff, run.pending, run.agent, run.ended = False, None, "", False
        run.history.append(HistoryEntry("user", message.text, message.intent))
        if new_session:
            run.sessions += 1
            if self.bot.flows.get(PATTERN_SESSION_START) is not None:
                run.push(PATTERN_SESSION_START)
                self._execute(run)
        if run.handoff:
            # Every message gets its one reply (the gateway counts a message in flight
            # until it has one). While a person holds the conversation the message goes to
            # them and its reply is empty (a delivery receipt); before one claims it, the
            # bot says only that one will answer.
            if run.agent:
                run.said.append(Utterance(RELAYED, "", sender="system"))
                run.notice = HandoffNotice("user_message", text=message.text,
                                           agent_id=run.agent)
            else:
                run.say("utter_handoff_waiting")
            return run.finish()
        if run.pending is not None:
            run.say("utter_busy")
            return run.finish()
        self._handle(run, message)
        if run.handoff and message.intent:  # handed over now: why, for the person
            run.handoff_reason = f"{run.handoff_reason} (intent: {message.intent})"
        return run.finish()

    def resume_knowledge(self, state: DialogueState, answer_text: str,
                         sources: Sequence[str], now_ms: int, *,
                         answered: bool = True) -> Outcome:
        """Say the knowledge agent's answer and resume the flow it interrupted.

        ``answered=False`` (the knowledge base had nothing: its answer is a refusal) counts
        as a message not understood, so repeated ones end in the cannot-handle pattern's
        handoff as they would without knowledge."""
        run = _Run(self, state, now_ms)
        if state.pending is None or state.pending.kind != "knowledge":
            return Outcome(state)  # a stale or repeated result: nothing to do
        run.pending = None
        run.said.append(Utterance("knowledge_answer", answer_text, (), tuple(sources)))
        if answered:
            run.attempts.pop(FALLBACK_COUNTER, None)
        else:
            attempt = run.attempts.get(FALLBACK_COUNTER, 0) + 1
            run.attempts[FALLBACK_COUNTER] = attempt
            if attempt >= self.settings.fallback.rephrase_attempts:
                run.attempts.pop(FALLBACK_COUNTER, None)
                while run.stack:
                    self._drop_frame(run)
                run.requested = None
                run.push(PATTERN_CANNOT_HANDLE, attempt=attempt)
        self._resume_interrupted(run)
        self._execute(run)
        return run.finish()

    def resume_action(self, state: DialogueState, result: ActionResult,
                      now_ms: int) -> Outcome:
        """Continue the flow that waits for ``result``; on failure it says so and ends."""
        pending = state.pending
        if pending is None or pending.kind != "action" or pending.name != result.name:
            return Outcome(state)  # a stale or repeated result: nothing to do
        run = _Run(self, state, now_ms)
        run.pending = None
        i = len(run.stack) - 1
        steps = run.flow(run.stack[i]).steps if run.stack else ()
        step = steps[run.stack[i].step] if run.stack and run.stack[i].step < len(steps) \
            else None
        if not isinstance(step, ActionStep):  # a new bot version changed the flow: go on
            self._execute(run)
            return run.finish()
        if result.ok:
            for output, slot in step.outputs.items():
                if output in result.outputs:
                    run.slots[slot] = result.outputs[output]
            run.advance(i)
        else:
            run.say(_failure_response(step, result.kind), {"error": result.error or ""})
            self._end_frame(run)
        self._execute(run)
        return run.finish()

    def may_ask_knowledge(self, message: UserTurn) -> bool:
        """Whether ``message`` goes to knowledge retrieval when no flow takes it: an
        intent the bot routes there, or (``knowledge.out_of_scope``) one the NLU is not
        sure of. The streaming step looks such messages up in the answer cache before
        deciding, whatever the conversation's state."""
        s = self.settings
        confident = self._confident(message)
        return self.bot.has_knowledge and (
            (confident and message.intent in s.knowledge.intents)
            or (s.knowledge.out_of_scope and not confident
                and message.intent not in s.cancel_intents))

    def release_handoff(self, state: DialogueState, now_ms: int) -> DialogueState:
        """The person handed the conversation back: the bot answers again."""
        return replace(state, version=state.version + 1, handoff=False, stack=(),
                       requested_slot=None, last_activity_ms=now_ms, agent="",
                       handoff_request="", handoff_since_ms=0)

    def command(self, state: DialogueState, cmd: HandoffCommand, now_ms: int) -> Outcome:
        """Apply a console command (or an expiry) to the conversation.

        A command for another request than the conversation's current one, or from an
        agent who does not hold it, changes nothing (a late or stray command: the console
        checks holders too, this makes it certain). ``claimed`` gives it to the agent
        (``pattern_handoff_claimed``); ``agent_message`` says the agent's text to the user
        (response ``agent_message``); ``note`` keeps the text with the conversation;
        ``released`` hands it back to the bot with the slots the agent set
        (``pattern_handoff_released``); ``closed`` ends the session
        (``pattern_handoff_closed``; the next message starts a new one); ``expired`` (no
        agent claimed it in time) hands it back to the bot (``pattern_handoff_expired``:
        a bot may open a ticket there with an action step; a bot that declares the slot
        :data:`HANDOFF_SUMMARY_SLOT` gets the request's summary, the expiry's text, in it).
        """
        kind, holder = cmd.type, state.agent
        if (kind not in _COMMANDS or not state.handoff
                or cmd.request_id != state.handoff_request
                or (kind in ("claimed", "expired") and holder)  # taken already
                or (kind in _HOLDER_COMMANDS and (not holder or cmd.agent_id != holder))):
            return Outcome(state)
        run = _Run(self, state, now_ms)
        notice = HandoffNotice(kind, agent_id=cmd.agent_id, text=cmd.text)
        if kind == "claimed":
            run.agent = cmd.agent_id
            notice = replace(notice, waited_ms=max(0, now_ms - state.handoff_since_ms))
            self._run_pattern(run, PATTERN_HANDOFF_CLAIMED, agent=cmd.agent_id)
        elif kind == "agent_message":
            run.said.append(Utterance(AGENT_MESSAGE, cmd.text, sender="agent",
                                      agent_id=cmd.agent_id))
        elif kind == "note":
            run.notes = (*run.notes, cmd.text)[-_MAX_NOTES:]
        elif kind == "released":
            run.handoff, run.agent = False, ""
            run.slots.update({k: v for k, v in cmd.slots.items()})
            self._run_pattern(run, PATTERN_HANDOFF_RELEASED, agent=cmd.agent_id)
        elif kind == "closed":
            run.handoff, run.agent, run.ended = False, "", True
            self._run_pattern(run, PATTERN_HANDOFF_CLOSED, agent=cmd.agent_id)
        else:  # expired: the sweep's summary of the request (agents/dialogue/handoff.py)
            run.handoff = False
            if HANDOFF_SUMMARY_SLOT in self.bot.slots:  # None: an expiry without one
                run.slots[HANDOFF_SUMMARY_SLOT] = cmd.text or None
            self._run_pattern(run, PATTERN_HANDOFF_EXPIRED)
        run.notice = notice
        return run.finish()

    def notify(self, state: DialogueState, response: str, data: Mapping[str, JSON],
               now_ms: int, channel: str = "") -> Outcome:
        """Say ``response`` unasked (a backend's callback, a business event: see
        streams/proactive.py), its ``{fields}`` filled from ``data`` and the slots. The
        flow in progress, the question it asked and a handoff are left as they are; a bot
        without the response says nothing (the bot decides what it tells its users)."""
        if response not in self.bot.responses:
            return Outcome(state)
        run = _Run(self, state, now_ms, channel)
        run.say(response, extra=data)
        return run.finish()

    def _run_pattern(self, run: _Run, name: str, **context: JSON) -> None:
        """Run a handoff pattern now (also while the conversation stays handed over)."""
        if self.bot.flows.get(name) is None:
            return
        held = run.handoff
        run.handoff = False
        run.push(name, **context)
        self._execute(run)
        run.handoff = held or run.handoff

    def choose_variant(self, variants: Sequence[ResponseVariant], channel: str,
                       known: Mapping[str, str], turn: int) -> ResponseVariant:
        """The channel's own variants if any, else the general ones; among them those whose
        every ``{field}`` has a value, the ones using the most fields; taken in turn
        (deterministic in the state)."""
        pool = [v for v in variants if v.channel == channel and channel] or \
            [v for v in variants if v.channel is None] or list(variants)
        usable = [v for v in pool if all(known.get(f) for f in _fields(v.text))]
        if usable:  # the most specific: "block your credit card" over "block your card"
            most = max(len(_fields(v.text)) for v in usable)
            usable = [v for v in usable if len(_fields(v.text)) == most]
        choices = usable or pool
        return choices[turn % len(choices)]

    # -- one message --------------------------------------------------------------------

    def _now(self, run: _Run) -> datetime:
        return datetime.fromtimestamp(run.now_ms / 1000, UTC).replace(tzinfo=None)

    def _confident(self, message: UserTurn, level: float | None = None) -> bool:
        need = self.settings.fallback.min_confidence if level is None else level
        return bool(message.intent) and not message.oos and message.confidence >= need

    def _handle(self, run: _Run, message: UserTurn) -> None:
        if self._resolve_clarification(run, message):
            return
        if self._confident(message) and message.intent in self.settings.cancel_intents:
            self._cancel(run)
            return
        i = run.user_frame_index()
        if i is not None and self._continue_flow(run, i, message):
            return
        self._route(run, message)

    def _resolve_clarification(self, run: _Run, message: UserTurn) -> bool:
        if not run.stack or run.stack[-1].flow != PATTERN_CLARIFICATION:
            return False
        options: list[str] = list(run.stack[-1].data.get("ctx", {}).get("flow_names", []))
        run.stack.pop()
        chosen = None
        if self._confident(message):
            chosen = next((o for o in options if message.intent in
                           self.bot.flows[o].start_intents), None)
        if chosen is None:
            text = _norm(message.text)
            chosen = next((o for o in options if _norm(self.bot.flows[o].label) in text
                           or _norm(o) in text), None)
        if chosen is None:
            return False
        run.attempts.pop(FALLBACK_COUNTER, None)
        self._start_flow(run, chosen, message)
        return True

    def _cancel(self, run: _Run) -> None:
        i = run.user_frame_index()
        if i is None:
            run.stack = []
            run.say("utter_nothing_to_cancel")
            return
        label = run.flow(run.stack[i]).label
        while run.stack:
            self._drop_frame(run)
        run.requested = None
        run.push("pattern_cancel", flow=label, previous_flow=label)
        self._execute(run)

    def _scope(self, flow: Flow) -> list[SlotSpec]:
        return [self.bot.slots[s] for s in dict.fromkeys(flow.collected_slots())
                if s in self.bot.slots]

    def _continue_flow(self, run: _Run, i: int, message: UserTurn) -> bool:
        """Handle ``message`` within the running flow; False when it is not about it."""
        frame = run.stack[i]
        flow = run.flow(frame)
        scope = self._scope(flow)
        currency = self.settings.default_currency
        now = self._now(run)
        found = extract_slots(scope, message.text, message.entities, currency=currency, now=now)
        requested = run.requested
        corrections = {s: v for s, v in found.items()
                       if s != requested and run.slots.get(s) is not None
                       and run.slots[s] != v}
        if not corrections and self._has_correction_cue(message.text):
            corrections = self._loose_corrections(run, scope, message.text, requested, now)
            found.update(corrections)
        if corrections:
            for slot, value in found.items():
                run.slots[slot] = value
            self._correct(run, i, flow, corrections)
            return True
        if found:
            run.slots.update(found)
            run.attempts.pop(FALLBACK_COUNTER, None)
            if requested and requested not in found:
                self._reask(run, i)
            self._execute(run)
            return True
        spec = self.bot.slots.get(requested) if requested else None
        if requested is None or spec is None:
            return False
        answer = functools.partial(
            answer_value, spec, message.text, currency=currency, now=now,
            intent=message.intent if self._confident(message) else None,
            affirm=self.settings.affirm_intents, deny=self.settings.deny_intents)
        if self._confident(message, self.settings.fallback.digression_confidence) and \
                message.intent in flow.start_intents and self._restates(message, spec, answer):
            self._reask(run, i)  # the user repeats what they want: ask again, no penalty
            self._execute(run)
            return True
        # A confident intent of another flow is a digression; then a typed answer ("yes",
        # "300", "tomorrow") is taken before chitchat or knowledge; a text slot takes
        # anything, so every digression is recognised before it.
        current = flow.steps[frame.step] if frame.step < len(flow.steps) else None
        digressions = not isinstance(current, CollectStep) or current.allow_digressions
        other = self.bot.flow_for_intent(message.intent) if digressions and self._confident(
            message, self.settings.fallback.digression_confidence) else None
        if other is not None and other.name != flow.name:
            return False  # "where is my order 12345" while asked an amount: another flow
        value = answer() if spec.type != "text" else None
        if value is None and digressions and self._is_digression(run, flow, message):
            return False
        if value is None and spec.type == "text" and not (
                message.oos and message.text.rstrip().endswith("?")):
            value = answer()
        if value is not None:
            run.slots[requested] = value
            run.attempts.pop(requested, None)
            run.attempts.pop(FALLBACK_COUNTER, None)
            self._execute(run)
            return True
        self._failed_answer(run, i, flow, requested)
        return True

    def _restates(self, message: UserTurn, spec: SlotSpec,
                  answer: Callable[[], JSON]) -> bool:
        """Whether a message classified as the running flow's own intent restates the
        request rather than answering the question: a typed slot's answer never does; a
        text slot's short answer ("Anna", when asked who) does not either, unless it is
        one of the intent's own examples ("send money")."""
        if spec.type != "text":
            return answer() is None
        text = message.text.strip().lower()
        intent = self.bot.intents.get(message.intent)
        examples = {e.text.strip().lower() for e in intent.examples} if intent else set()
        return len(text.split()) > 3 or text in examples

    def _has_correction_cue(self, text: str) -> bool:
        low = " " + _norm(text) + " "
        return any(f" {cue.strip()}" in low if not cue.endswith(",") else cue in low
                   for cue in self.settings.correction_cues)

    def _loose_corrections(self, run: _Run, scope: Sequence[SlotSpec], text: str,
                           requested: str | None, now: datetime) -> dict[str, JSON]:
        """A changed value for a filled slot from a message like "no, make it 300" (a
        number is read as the filled amount's currency)."""
        for slot in reversed(scope):
            current = run.slots.get(slot.name)
            if slot.name == requested or current is None or slot.type in ("text", "boolean"):
                continue
            value: JSON = None
            if slot.type == "amount":
                currency = current.get("currency") if isinstance(current, Mapping) else None
                value = parse_amount(text, currency or self.settings.default_currency)
            elif slot.type == "number":
                value = parse_number(text)
            elif slot.type == "datetime":
                value = parse_datetime(text, now)
            elif slot.type == "categorical":
                value = parse_categorical(slot, text)
            elif slot.type == "pattern" and slot.pattern:
                value = parse_pattern(slot.pattern, text)
            if value is not None and value != current:
                return {slot.name: value}
        return {}

    def _correct(self, run: _Run, i: int, flow: Flow, corrections: Mapping[str, JSON]) -> None:
        positions = [n for n, s in enumerate(flow.steps)
                     if isinstance(s, CollectStep) and s.slot in corrections]
        frame = run.stack[i]
        if positions and frame.step > min(positions):
            run.advance(i, to=min(positions) + 1)
        else:
            run.update_data(i, asked=None)
        run.requested = None
        run.attempts.pop(FALLBACK_COUNTER, None)
        slot, value = next(iter(corrections.items()))
        del run.stack[i + 1:]
        run.push("pattern_correction", slot=self._slot_label(slot), value=value,
                 flow=flow.label, previous_flow=flow.label)
        self._execute(run)

    def _slot_label(self, slot: str) -> str:
        spec = self.bot.slots.get(slot)
        return spec.description if spec and spec.description else slot.replace("_", " ")

    def _is_digression(self, run: _Run, flow: Flow, message: UserTurn) -> bool:
        if not self._confident(message, self.settings.fallback.digression_confidence):
            return False
        intent = message.intent
        if intent in self.settings.affirm_intents or intent in self.settings.deny_intents:
            return False
        if intent in self.settings.knowledge.intents and self.bot.has_knowledge:
            return True
        if intent in self.settings.chitchat:
            return True
        other = self.bot.flow_for_intent(intent)
        return other is not None and other.name != flow.name

    def _reask(self, run: _Run, i: int) -> None:
        run.update_data(i, asked=None)

    def _failed_answer(self, run: _Run, i: int, flow: Flow, slot: str) -> None:
        frame = run.stack[i]
        step = flow.steps[frame.step] if frame.step < len(flow.steps) else None
        collect = step if isinstance(step, CollectStep) else None
        attempts = run.attempts.get(slot, 0) + 1
        run.attempts[slot] = attempts
        limit = (collect.max_attempts if collect and collect.max_attempts
                 else self.settings.fallback.max_attempts)
        if attempts >= limit:
            run.attempts.pop(slot, None)
            run.requested = None
            failure = collect.on_failure if collect else None
            if failure:
                self._end_frame(run, i, announce=False)
                run.push(failure, flow=flow.label, slot=self._slot_label(slot))
            else:
                while run.stack:
                    self._drop_frame(run)
                run.push(PATTERN_CANNOT_HANDLE, flow=flow.label, slot=self._slot_label(slot),
                         attempt=self.settings.fallback.rephrase_attempts)
            self._execute(run)
            return
        run.say(collect.invalid if collect and collect.invalid else "utter_invalid_value",
                {"slot": self._slot_label(slot)})
        self._reask(run, i)
        self._execute(run)

    def _route(self, run: _Run, message: UserTurn) -> None:
        """A message that the running flow (if any) does not take."""
        s = self.settings
        confident = self._confident(message)
        i = run.user_frame_index()
        if self.may_ask_knowledge(message):
            if i is not None:
                self._interrupt(run, i)
            run.pending = Pending("knowledge", question=message.text)
            run.request = AskKnowledge(message.text)
            return  # the fallback count is settled by the answer (resume_knowledge)
        if i is None and self._clarify(run, message):
            return
        flow = self.bot.flow_for_intent(message.intent) if confident else None
        if flow is not None:
            run.attempts.pop(FALLBACK_COUNTER, None)
            if i is not None and run.stack[i].flow == flow.name:
                self._reask(run, i)
                self._execute(run)
                return
            if i is not None:
                self._interrupt(run, i)
            self._start_flow(run, flow.name, message)
            return
        if confident and message.intent in s.chitchat:
            run.attempts.pop(FALLBACK_COUNTER, None)
            if i is not None:
                self._reask(run, i)
            if s.chitchat[message.intent]:
                run.say(s.chitchat[message.intent])
            else:  # mapped to nothing: the (overridable) chitchat pattern answers
                run.push(PATTERN_CHITCHAT, flow=run.flow(run.stack[i]).label
                         if i is not None else None)
            self._execute(run)
            return
        if i is None:
            for candidate in self.bot.flows.values():
                cond = candidate.start_condition
                if cond is not None and not candidate.name.startswith("pattern_") \
                        and cond.evaluate(run.slots):
                    self._start_flow(run, candidate.name, message)
                    return
        attempt = run.attempts.get(FALLBACK_COUNTER, 0) + 1
        run.attempts[FALLBACK_COUNTER] = attempt
        if attempt >= s.fallback.rephrase_attempts:
            run.attempts.pop(FALLBACK_COUNTER, None)
            if i is not None:
                while run.stack:
                    self._drop_frame(run)
                run.requested = None
        elif i is not None:
            self._reask(run, i)
        label = run.flow(run.stack[i]).label if i is not None and run.stack else None
        run.push(PATTERN_CANNOT_HANDLE, attempt=attempt, flow=label)
        self._execute(run)

    def _clarify(self, run: _Run, message: UserTurn) -> bool:
        s = self.settings.fallback
        if message.oos or len(message.ranking) < 2:
            return False
        (first, c1), (second, c2) = message.ranking[0], message.ranking[1]
        f1, f2 = self.bot.flow_for_intent(first), self.bot.flow_for_intent(second)
        if f1 is None or f2 is None or f1.name == f2.name:
            return False
        if c1 >= s.clarify_below or c1 - c2 > s.clarify_margin or c2 < s.min_confidence / 2:
            return False
        labels = [f1.label, f2.label]
        run.push(PATTERN_CLARIFICATION, options=" or ".join(labels))
        run.update_data(len(run.stack) - 1, ctx={"options": " or ".join(labels),
                                                 "flow_names": [f1.name, f2.name]})
        self._execute(run, quick_replies=labels)
        return True

    def _start_flow(self, run: _Run, name: str, message: UserTurn) -> None:
        flow = self.bot.flows[name]
        found = extract_slots(self._scope(flow), message.text, message.entities,
                              currency=self.settings.default_currency, now=self._now(run))
        run.slots.update(found)
        run.requested = None
        run.stack.append(Frame(name, 0))
        self._execute(run)

    def _interrupt(self, run: _Run, i: int) -> None:
        run.update_data(i, asked=None, interrupted=1)
        run.requested = None

    def _resume_interrupted(self, run: _Run) -> None:
        i = run.user_frame_index()
        if i is not None and i == len(run.stack) - 1 and run.stack[i].data.get("interrupted"):
            run.update_data(i, interrupted=None, asked=None)
            run.push(PATTERN_DIGRESSION, flow=run.flow(run.stack[i]).label)

    # -- running flows ------------------------------------------------------------------

    def _owned_slots(self, run: _Run, frame: Frame) -> set[str]:
        """The slots that end with ``frame``: its flow's (unless persisted), those carried
        over from a flow that linked to it, minus those a flow still running uses."""
        flow = run.flow(frame)
        owned = (set(flow.set_slots()) - set(flow.persisted_slots)) | set(
            frame.data.get("carried", ()))
        for other in run.stack:
            if other is not frame:
                owned -= run.flow(other).set_slots()
        return owned

    def _drop_frame(self, run: _Run, *, keep_slots: bool = False) -> set[str]:
        """Pop the top frame and forget the slots it owns (:meth:`_owned_slots`); with
        ``keep_slots`` they are kept and returned (a link carries them to the next flow)."""
        frame = run.stack[-1]
        if frame.flow.startswith("pattern_"):
            run.stack.pop()
            return set()
        owned = self._owned_slots(run, frame)
        run.stack.pop()
        if run.requested in owned or run.requested in run.flow(frame).set_slots():
            run.requested = None
        if keep_slots:
            return owned
        for slot in owned:
            run.slots.pop(slot, None)
            run.attempts.pop(slot, None)
        return set()

    def _end_frame(self, run: _Run, i: int | None = None, *, announce: bool = True) -> None:
        if i is not None:
            del run.stack[i + 1:]
        self._drop_frame(run)
        if announce:
            self._resume_interrupted(run)

    def _execute(self, run: _Run, quick_replies: Sequence[str] = ()) -> None:
        """Run steps until a flow waits (a question, an action) or the stack is empty."""
        while run.stack and not run.handoff:
            run.steps_run += 1
            if run.steps_run > _MAX_STEPS:  # a flow that loops without asking anything
                run.stack.clear()
                run.requested = None
                return
            i = len(run.stack) - 1
            frame = run.stack[i]
            flow = run.flow(frame)
            if frame.flow == PATTERN_CLARIFICATION and frame.step >= len(flow.steps):
                return  # waits for the user's choice
            if frame.step >= len(flow.steps):
                self._end_frame(run)
                continue
            step = flow.steps[frame.step]
            if isinstance(step, CollectStep):
                if not self._collect(run, i, step):
                    return
            elif isinstance(step, ActionStep):
                spec = self.bot.actions.get(step.action)
                names = step.inputs or (spec.inputs if spec else ())
                inputs = {n: run.slots.get(n) for n in names}
                run.pending = Pending("action", step.action)
                run.request = CallAction(step.action, inputs)
                return
            elif isinstance(step, SetSlotsStep):
                run.slots.update(step.values)
                run.advance(i)
            elif isinstance(step, BranchStep):
                values = {**run.context(), **run.slots}
                target = next((t for c, t in step.cases if c is None or c.evaluate(values)),
                              None)
                if target is None:
                    run.advance(i)
                elif target == "end":
                    self._end_frame(run)
                else:
                    run.advance(i, to=flow.step_index(target))
            elif isinstance(step, LinkStep):
                # The linked flow continues the conversation: it gets this flow's slots
                # (said with its responses) and forgets them when it ends.
                data: dict[str, JSON] = {}
                if context := frame.data.get("ctx", {}):
                    data["ctx"] = context
                if carried := sorted(self._drop_frame(run, keep_slots=True)):
                    data["carried"] = carried
                run.stack.append(Frame(step.flow, 0, data))
            elif isinstance(step, CallStep):
                run.advance(i)
                run.stack.append(Frame(step.flow, 0))
            elif isinstance(step, SayStep):
                replies = quick_replies if frame.flow == PATTERN_CLARIFICATION else ()
                run.say(step.response, quick_replies=replies)
                run.advance(i)
            elif isinstance(step, EndStep):
                self._end_frame(run)
            elif isinstance(step, HandoffStep):
                run.handoff = True
                run.handoff_reason = next((f.flow for f in reversed(run.stack)
                                           if not f.flow.startswith("pattern_")), frame.flow)
                # The person gets what the user told, not Parley's own bookkeeping (slots
                # named parley_*, e.g. the degradation level last announced).
                run.handoff_slots = {k: v for k, v in run.slots.items()
                                     if v is not None and not k.startswith("parley_")}
                while run.stack:
                    self._drop_frame(run)
                run.requested = None
                return

    def _collect(self, run: _Run, i: int, step: CollectStep) -> bool:
        """Advance past a collect step when its slot is settled; else ask (and wait)."""
        frame = run.stack[i]
        filled = run.slots.get(step.slot) is not None
        asked = bool(frame.data.get("asked"))
        if filled and (asked or not step.ask_before_filling):
            if run.requested == step.slot:
                run.requested = None
            run.attempts.pop(step.slot, None)
            run.advance(i)
            return True
        if not filled and not step.required and not asked:
            run.advance(i)
            return True
        if asked and run.requested == step.slot:
            return False  # still waiting for the answer
        if step.ask_before_filling and filled:
            run.slots.pop(step.slot, None)
        run.say(step.ask)
        run.update_data(i, asked=1)
        run.requested = step.slot
        return False


def _norm(text: str) -> str:
    return " ".join(text.casefold().replace("_", " ").split())
