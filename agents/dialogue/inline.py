"""A bot run in process: its NLU model and dialogue manager, with no infrastructure.

This is what ``parley test`` (without ``--url``) and ``parley dialogue evaluate`` talk
to. One user message becomes a :class:`~agents.dialogue.manager.UserTurn` through the
NLU model, then a dialogue step; what the step waits for is answered on the spot, as the
agents would answer it over their topics:

- an action (:class:`~agents.dialogue.manager.CallAction`) gets the result of
  ``actions`` — by default a success with no outputs, since no business system is
  attached here (tests that need outputs pass their own);
- a knowledge question (:class:`~agents.dialogue.manager.AskKnowledge`) gets a fixed
  answer naming the question, said as the response ``knowledge_answer``: retrieval
  quality is measured by ``parley kb evaluate``, not here.

Time is a simulated clock the caller passes (``now_ms``), so a run decides the same way
every time.

The NLU model of a bot is trained on first use and cached by the bot's content hash, in
the cache ``parley train`` fills (:func:`agents.dialogue.training.ensure_trained`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agents.dialogue.cli import BotKnowledge
from agents.dialogue.domain import Bot
from agents.dialogue.manager import (
    ActionResult,
    AskKnowledge,
    CallAction,
    DialogueManager,
    Outcome,
    UserTurn,
    Utterance,
)
from agents.dialogue.state import DialogueState
from agents.dialogue.testcases import Observation, Snapshot, StubbedAction
from agents.dialogue.training import ensure_trained
from agents.nlu.model import NLUModel
from agents.nlu.results import Understanding

__all__ = ["InlineBot", "InlineConversation", "TurnResult", "Understander", "load_inline_bot",
           "stubbed_actions", "succeed_without_outputs", "user_turn_of", "with_requested_slot"]

KNOWLEDGE_RESPONSE = "knowledge_answer"
_MAX_RESUMES = 20  # requests answered in one turn before a looping flow is given up on


class Understander(Protocol):
    def understand(self, text: str, reference_time: datetime | None = None
                   ) -> Understanding: ...


def user_turn_of(text: str, understanding: Understanding, channel: str = "") -> UserTurn:
    """The dialogue manager's view of one understood message (as the NLU agent sends it)."""
    return UserTurn(
        text=text, intent=understanding.intent, confidence=understanding.confidence,
        oos=understanding.oos, ranking=tuple(understanding.ranking),
        entities=tuple({"entity": e.entity, "start": e.start, "end": e.end, "text": e.text,
                        "value": e.value, "source": e.source} for e in understanding.entities),
        channel=channel)


def succeed_without_outputs(call: CallAction) -> ActionResult:
    return ActionResult(call.name, ok=True)


def stubbed_actions(stubs: Mapping[str, StubbedAction]
                    ) -> Callable[[CallAction], ActionResult]:
    """Actions answered as a test case says (``actions:``); others succeed without
    outputs."""
    def answer(call: CallAction) -> ActionResult:
        stub = stubs.get(call.name)
        if stub is None:
            return succeed_without_outputs(call)
        if stub.ok:
            return ActionResult(call.name, True, dict(stub.outputs))
        return ActionResult(call.name, False, error=f"(stubbed {stub.kind})", kind=stub.kind)
    return answer


@dataclass(frozen=True, slots=True)
class TurnResult:
    state: DialogueState
    utterances: tuple[Utterance, ...]
    flows_seen: tuple[str, ...]
    """The flows of the turn: on the stack after the step or a resumed request, and the flow
    of a confident intent (which the manager starts; it may have ended within the turn)."""
    understood: UserTurn
    slots_set: Mapping[str, Any] = field(default_factory=dict)
    """The slots the turn set, with their values, kept here when a flow that ended within
    the turn let them go (what ``slot_was_set`` asks about)."""


class InlineBot:
    """One bot's NLU and dialogue manager; holds no conversation (states are passed in)."""

    def __init__(self, bot: Bot, nlu: Understander, *,
                 actions: Callable[[CallAction], ActionResult] = succeed_without_outputs,
                 channel: str = "") -> None:
        self.bot, self.nlu = bot, nlu
        self.manager = DialogueManager(bot)
        self.actions, self.channel = actions, channel
        #: Answers knowledge questions: (text, sources, answered); None: a stand-in answer.
        self.knowledge: Callable[[str], tuple[str, tuple[str, ...], bool]] | None = None

    def understand(self, text: str, now_ms: int) -> UserTurn:
        when = datetime.fromtimestamp(now_ms / 1000, UTC)
        return user_turn_of(text, self.nlu.understand(text, when), self.channel)

    def turn(self, state: DialogueState, message: UserTurn, now_ms: int,
             actions: Callable[[CallAction], ActionResult] | None = None) -> TurnResult:
        """One dialogue step and every request it leads to, answered on the spot (actions
        by ``actions``, default the bot's)."""
        outcome = self.manager.step(state, message, now_ms)
        said = list(outcome.utterances)
        set_now = dict(outcome.slots_set)
        seen = _flows(outcome.state, [])
        started = self.bot.flow_for_intent(message.intent) if message.intent and \
            not message.oos and message.confidence >= self.bot.settings.fallback.min_confidence \
            else None
        if started is not None and started.name not in seen:
            seen.insert(0, started.name)  # a flow that ran to its end within the turn
        for _ in range(_MAX_RESUMES):
            if outcome.request is None:
                break
            outcome = self._answer(outcome, now_ms, actions or self.actions)
            said.extend(outcome.utterances)
            set_now.update(outcome.slots_set)
            seen = _flows(outcome.state, seen)
        return TurnResult(outcome.state, tuple(said), tuple(seen), message, set_now)

    def _answer(self, outcome: Outcome, now_ms: int,
                actions: Callable[[CallAction], ActionResult]) -> Outcome:
        request = outcome.request
        if isinstance(request, AskKnowledge):
            if self.knowledge is None:
                return self.manager.resume_knowledge(
                    outcome.state, f"(an answer from the bot's documents to: {request.question})",
                    (), now_ms)
            text, sources, answered = self.knowledge(request.question)
            return self.manager.resume_knowledge(outcome.state, text, sources, now_ms,
                                                 answered=answered)
        assert isinstance(request, CallAction)
        return self.manager.resume_action(outcome.state, actions(request), now_ms)


def _flows(state: DialogueState, seen: list[str]) -> list[str]:
    for frame in state.stack:
        if frame.flow not in seen:
            seen.append(frame.flow)
    return seen


class InlineConversation:
    """A :class:`~agents.dialogue.testcases.Conversation` with an :class:`InlineBot`."""

    def __init__(self, bot: InlineBot, *, start_ms: int = 1_800_000_000_000,
                 step_ms: int = 1000,
                 actions: Callable[[CallAction], ActionResult] | None = None) -> None:
        self.bot, self.actions = bot, actions
        self.state = DialogueState()
        self.now_ms, self.step_ms = start_ms, step_ms
        self.last: TurnResult | None = None

    async def send(self, text: str) -> list[Observation]:
        self.now_ms += self.step_ms
        result = self.bot.turn(self.state, self.bot.understand(text, self.now_ms), self.now_ms,
                               self.actions)
        self.state, self.last = result.state, result
        return [Observation(u.text, u.response, tuple(u.quick_replies))
                for u in result.utterances]

    def snapshot(self) -> Snapshot:
        """The state after the last turn; its slots include those the turn set and a flow
        that ended let go."""
        set_now = self.last.slots_set if self.last is not None else {}
        return Snapshot({**self.state.slots, **set_now}, self.state.active_flow,
                        self.state.requested_slot)

    async def close(self) -> None:
        return None


def with_requested_slot(state: DialogueState, slot: str | None) -> DialogueState:
    """``state`` as if the bot had just asked for ``slot`` (None: asked for nothing)."""
    return replace(state, requested_slot=slot)


def load_inline_bot(bot: Bot, cache_root: Path, *, channel: str = "",
                    actions: Callable[[CallAction], ActionResult] = succeed_without_outputs
                    ) -> InlineBot:
    """An :class:`InlineBot` with the bot's model, trained first when ``cache_root`` does not
    hold it yet (:func:`agents.dialogue.training.ensure_trained`: the cache ``parley train``
    and ``parley shell`` use)."""
    trained = ensure_trained(bot, cache_root)
    inline = InlineBot(trained.bot, NLUModel.load(trained.nlu_dir), actions=actions,
                       channel=channel)
    if trained.kb_dir is not None:  # answered from the bot's own index, as `parley shell` does
        inline.knowledge = BotKnowledge(trained.kb_dir).answer
    return inline

