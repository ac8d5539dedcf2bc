"""One conversation's dialogue state: the record the dialogue step loads and stores.

Everything the manager needs to continue a conversation, and nothing else: the flow
stack (frames of flow name, step index and a little per-frame data), the slots, the
slot the bot asked for, failure counters, the handoff (flag, holder, request, notes), a
pending request (an action or a knowledge question whose result the flow waits for), a
bounded recent history and the time of the last activity. ``version`` is bumped on every
change, so a store can refuse a stale write; ``bot_version`` says which bot version wrote it.

:meth:`DialogueState.to_bytes` writes compact JSON with a schema number ``s``;
:meth:`DialogueState.from_bytes` reads this and every older schema, and fails with a
clear :class:`StateFormatError` on anything else (a newer writer, corrupt bytes) rather
than guessing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agents.dialogue.domain import DialogueError

__all__ = ["SCHEMA_VERSION", "DialogueState", "Frame", "HistoryEntry", "Pending",
           "StateFormatError"]

SCHEMA_VERSION = 1
JSON = Any


class StateFormatError(DialogueError):
    """A stored dialogue state that this version cannot read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot read the stored dialogue state: {self.reason}"


@dataclass(frozen=True, slots=True)
class Frame:
    """A running flow: its name, the index of its current step, and its data (whether the
    current question was asked, a pattern's context, an interrupted flow's marker)."""

    flow: str
    step: int = 0
    data: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> list[JSON]:
        return [self.flow, self.step, dict(self.data)] if self.data else [self.flow, self.step]

    @classmethod
    def from_json(cls, raw: JSON) -> Frame:
        return cls(str(raw[0]), int(raw[1]), dict(raw[2]) if len(raw) > 2 else {})


@dataclass(frozen=True, slots=True)
class Pending:
    """What the flow waits for: ``kind`` is ``action`` or ``knowledge``."""

    kind: str
    name: str = ""
    question: str = ""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recent turn: who spoke (``user``, ``bot`` or ``agent``, a person who held the
    conversation), the text, and the intent or response."""

    role: str
    text: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class DialogueState:
    version: int = 0
    bot_version: str = ""
    stack: tuple[Frame, ...] = ()
    slots: Mapping[str, JSON] = field(default_factory=dict)
    requested_slot: str | None = None
    attempts: Mapping[str, int] = field(default_factory=dict)
    handoff: bool = False
    pending: Pending | None = None
    history: tuple[HistoryEntry, ...] = ()
    last_activity_ms: int = 0
    sessions: int = 0
    #: Human handoff: the agent holding the conversation ('' while it waits for one), the
    #: request (its turn's event id: commands for an earlier handoff are ignored), when it
    #: was asked for, and the agents' notes kept for the next agent or the bot.
    agent: str = ""
    handoff_request: str = ""
    handoff_since_ms: int = 0
    notes: tuple[str, ...] = ()
    #: The conversation was closed (by an agent): the next message starts a new session.
    ended: bool = False
    #: The last message came from a bot tester (streams/turn_state.py): the replies of
    #: its turn, resumed by a knowledge answer or an action result too, carry the state,
    #: with the slots the turn set so far (a flow that ended may have let them go).
    tester: bool = False
    turn_slots: Mapping[str, JSON] = field(default_factory=dict)

    @property
    def active_flow(self) -> str | None:
        """The flow on top of the stack (patterns included), or None."""
        return self.stack[-1].flow if self.stack else None

    def with_slots(self, **values: JSON) -> DialogueState:
        return replace(self, slots={**self.slots, **values})

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"s": SCHEMA_VERSION, "v": self.version}
        if self.bot_version:
            out["b"] = self.bot_version
        if self.stack:
            out["f"] = [frame.to_json() for frame in self.stack]
        if self.slots:
            out["sl"] = dict(self.slots)
        if self.requested_slot:
            out["r"] = self.requested_slot
        if self.attempts:
            out["a"] = dict(self.attempts)
        if self.handoff:
            out["h"] = 1
        if self.pending is not None:
            out["p"] = [self.pending.kind, self.pending.name, self.pending.question]
        if self.history:
            out["hi"] = [[h.role, h.text, h.label] for h in self.history]
        out["t"] = self.last_activity_ms
        if self.sessions:
            out["n"] = self.sessions
        if self.agent:
            out["ag"] = self.agent
        if self.handoff_request:
            out["hr"] = self.handoff_request
        if self.handoff_since_ms:
            out["hs"] = self.handoff_since_ms
        if self.notes:
            out["no"] = list(self.notes)
        if self.ended:
            out["e"] = 1
        if self.tester:
            out["bt"] = 1
        if self.turn_slots:
            out["ts"] = dict(self.turn_slots)
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False,
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: JSON) -> DialogueState:
        if not isinstance(raw, dict):
            raise StateFormatError("expected a JSON object")
        schema = raw.get("s")
        if not isinstance(schema, int):
            raise StateFormatError("no schema version ('s')")
        if schema > SCHEMA_VERSION:
            raise StateFormatError(f"written with schema {schema}, newer than this version's "
                                   f"{SCHEMA_VERSION}: upgrade this worker")
        if schema < 1:
            raise StateFormatError(f"unknown schema {schema}")
        try:
            pending = raw.get("p")
            return cls(
                version=int(raw.get("v", 0)),
                bot_version=str(raw.get("b", "")),
                stack=tuple(Frame.from_json(f) for f in raw.get("f", ())),
                slots=dict(raw.get("sl", {})),
                requested_slot=raw.get("r") or None,
                attempts={str(k): int(v) for k, v in raw.get("a", {}).items()},
                handoff=bool(raw.get("h", 0)),
                pending=Pending(*pending) if pending else None,
                history=tuple(HistoryEntry(*h) for h in raw.get("hi", ())),
                last_activity_ms=int(raw.get("t", 0)),
                sessions=int(raw.get("n", 0)),
                agent=str(raw.get("ag", "")),
                handoff_request=str(raw.get("hr", "")),
                handoff_since_ms=int(raw.get("hs", 0)),
                notes=tuple(str(n) for n in raw.get("no", ())),
                ended=bool(raw.get("e", 0)),
                tester=bool(raw.get("bt", 0)),
                turn_slots=dict(raw.get("ts", {})),
            )
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise StateFormatError(f"malformed field: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> DialogueState:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateFormatError(f"not JSON: {exc}") from exc
        return cls.from_json(raw)
