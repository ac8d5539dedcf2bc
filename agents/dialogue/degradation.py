"""What a tenant's degradation level changes in a turn, without I/O.

The level itself is decided in :mod:`streams.degradation` (forced by an operator, or
following the breakers); the dialogue step (agents/dialogue/turns.py) asks it for each
event's tenant and applies it here:

* **1 full, 2 reduced**: the turn is decided as always. At level 2 the breakers already
  answer a down backend's calls "unavailable" at once (the flow's ``on_unavailable``:
  "I can't reach your account right now" and the offer of a person) and the knowledge
  agent answers extractively while the LLM's breaker is open. An operator who *forces*
  level 2 gets both for every backend: actions are answered "unavailable" here without
  a call, and the knowledge agent leaves the LLM out (``TenantLevels.llm_allowed``).
* **3 static**: the flow may not wait for anything: an action it calls is answered
  ``unavailable`` at once and nothing is sent to the backend; a knowledge question is
  answered from the answer cache (looked up before deciding) or else counted unanswered,
  and never sent to the knowledge agent (no retrieval, no LLM).
* **4 maintenance**: a user message is not decided at all: it is kept (the dialogue step
  stores it in Redis) and the user is told; it is replayed when the level drops.

The user is told once when the level of their conversation changes (the level they were
last told is kept in the reserved slot :data:`TOLD_SLOT`), in the reply of their next turn.
"""

from __future__ import annotations

from dataclasses import replace

from agents.dialogue.manager import (
    ActionResult,
    AskKnowledge,
    CallAction,
    DialogueManager,
    Outcome,
    Utterance,
)
from agents.dialogue.state import DialogueState
from streams.degradation import Level

__all__ = ["MAINTENANCE_REPLY", "NOTICES", "TOLD_SLOT", "announce", "level_told",
           "maintenance_outcome", "without_waiting"]

#: The slot holding the level the conversation was last told (absent: 1, full service).
TOLD_SLOT = "parley_degradation_level"

NOTICES: dict[Level, str] = {
    Level.FULL: "All our services are working normally again.",
    Level.REDUCED: "Some of our services are running in a reduced mode right now, so I "
                   "may not be able to do everything.",
    Level.STATIC: "We're running a limited service right now: I can answer common "
                  "questions, but I can't look anything up or change anything.",
    Level.MAINTENANCE: "We're doing some maintenance right now.",
}

MAINTENANCE_REPLY = ("I've received your message and kept it: I'll answer as soon as the "
                     "maintenance is over.")

#: At most this many requests of one turn are answered at once at level 3 (a flow that
#: calls action after action ends on the first failure anyway).
_MAX_SHORTCUTS = 8


def level_told(state: DialogueState) -> Level:
    """The level the conversation was last told (1 when never told anything)."""
    raw = state.slots.get(TOLD_SLOT, 1)
    try:
        return Level(int(raw))
    except (TypeError, ValueError):
        return Level.FULL


def announce(outcome: Outcome, level: Level, told: Level) -> Outcome:
    """``outcome`` with the notice of the level first, when it is not the level ``told``;
    it records the level as told. Unchanged when the turn says nothing (the notice waits
    for the next reply, so it is never a message of its own out of the blue)."""
    if level == told or not outcome.utterances:
        return outcome
    notice = Utterance(f"degradation_level_{int(level)}", NOTICES[level], sender="system")
    state = outcome.state
    return replace(outcome, utterances=(notice, *outcome.utterances),
                   state=replace(state, slots={**state.slots, TOLD_SLOT: int(level)}))


def without_waiting(manager: DialogueManager, outcome: Outcome, now_ms: int, *,
                    knowledge: bool = True) -> Outcome:
    """``outcome`` with the action it waits for answered at once as unavailable, as if
    the backend could not be reached (levels 3, and 2 when forced); with ``knowledge``
    (level 3), a knowledge question too, as unanswered."""
    for _ in range(_MAX_SHORTCUTS):
        request = outcome.request
        if isinstance(request, CallAction):
            more = manager.resume_action(outcome.state, ActionResult(
                request.name, False, {}, "static fallback: no backend calls",
                "unavailable"), now_ms)
        elif isinstance(request, AskKnowledge) and knowledge:
            more = manager.resume_knowledge(outcome.state, "", (), now_ms, answered=False)
        else:
            return outcome
        outcome = replace(more, utterances=outcome.utterances + more.utterances,
                          handoff=outcome.handoff or more.handoff,
                          notice=more.notice or outcome.notice)
    return outcome


def maintenance_outcome(state: DialogueState, told: Level) -> Outcome:
    """Level 4: a kept message's turn — the state untouched (but for the level told), and
    the user told their message waits."""
    says = (Utterance("degradation_kept", MAINTENANCE_REPLY, sender="system"),)
    return announce(Outcome(state, says), Level.MAINTENANCE, told)
