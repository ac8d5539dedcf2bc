"""A bot, in memory: what :func:`agents.dialogue.loader.load_bot` makes of a bot folder.

Every element keeps where it was written (:class:`Source`, ``file:line``) so that
an error found later — by validation, by the dialogue manager, by a test runner —
can point the builder at the line to change. Everything is frozen: one ``Bot`` is
shared by every conversation a worker serves, and a new bot version is a new
object, never an edit of the running one.

Flows are flat lists of steps; ``branch`` jumps to a step ``id`` (or ``end``), so a
frame of a running flow is just (flow name, step index) and survives a restart as
two values. Conditions (``branch``, flow ``start.condition``) are a small language
over slots, parsed once at load time (:func:`parse_condition`)::

    amount.value > 100 and recipient is set
    not confirm_transfer
    card_type == "credit" or card_type == debit
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from agents.nlu.data import Example, SpanLabel
from kernel.errors import ParleyError

__all__ = [
    "SLOT_TYPES",
    "ActionSpec",
    "ActionStep",
    "AnnotatedExample",
    "Bot",
    "BotSettings",
    "BranchStep",
    "CallStep",
    "CollectStep",
    "Condition",
    "DialogueError",
    "EndStep",
    "FallbackSettings",
    "Flow",
    "HandoffStep",
    "IntentSpec",
    "KnowledgeSettings",
    "LinkStep",
    "NluOptions",
    "ResponseSpec",
    "ResponseVariant",
    "SaySpec",
    "SayStep",
    "SetSlotsStep",
    "SlotSpec",
    "Source",
    "Step",
    "parse_condition",
]

SlotType = Literal["text", "number", "amount", "datetime", "boolean", "categorical", "pattern"]
SLOT_TYPES: tuple[str, ...] = ("text", "number", "amount", "datetime", "boolean", "categorical",
                               "pattern")
JSON = Any  # a JSON-able value: slot values are str, int, float, bool, None or dicts of them


class DialogueError(ParleyError):
    """Base of the dialogue manager's errors (a broken bot folder, an unreadable state)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where an element was written: the file relative to the bot folder, and its line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


NOWHERE = Source("<built-in>", 0)


# --------------------------------------------------------------------------- conditions

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<op>==|!=|>=|<=|>|<|\(|\))|(?P<name>[A-Za-z_][\w.]*))"
)
_KEYWORDS = frozenset({"and", "or", "not", "is", "set", "true", "false", "null", "none"})


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; :meth:`evaluate` over a mapping of names to values."""

    text: str
    tree: tuple[Any, ...]

    def names(self) -> frozenset[str]:
        """The slot (or context) names the condition reads, without attribute parts."""
        out: set[str] = set()

        def walk(node: tuple[Any, ...]) -> None:
            kind = node[0]
            if kind in ("and", "or"):
                walk(node[1])
                walk(node[2])
            elif kind == "not":
                walk(node[1])
            elif kind in ("truthy", "isset", "cmp"):
                out.add(node[1].split(".")[0])

        walk(self.tree)
        return frozenset(out)

    def evaluate(self, values: Mapping[str, JSON]) -> bool:
        return bool(_evaluate(self.tree, values))


def _lookup(name: str, values: Mapping[str, JSON]) -> JSON:
    head, *rest = name.split(".")
    value = values.get(head)
    for part in rest:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _as_number(value: JSON) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("value")
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _evaluate(node: tuple[Any, ...], values: Mapping[str, JSON]) -> bool:
    kind = node[0]
    if kind == "and":
        return _evaluate(node[1], values) and _evaluate(node[2], values)
    if kind == "or":
        return _evaluate(node[1], values) or _evaluate(node[2], values)
    if kind == "not":
        return not _evaluate(node[1], values)
    if kind == "const":
        return bool(node[1])
    value = _lookup(node[1], values)
    if kind == "isset":
        return value is not None
    if kind == "truthy":
        return value not in (None, False, "", 0)
    op, expected = node[2], node[3]
    if op in ("==", "!="):
        if isinstance(expected, (int, float, Decimal)) and not isinstance(expected, bool):
            got = _as_number(value)
            equal = got is not None and got == Decimal(str(expected))
        elif isinstance(expected, str) and isinstance(value, str):
            equal = value.casefold() == expected.casefold()
        else:
            equal = value == expected
        return equal if op == "==" else not equal
    left, right = _as_number(value), _as_number(expected)
    if left is None or right is None:
        return False
    return {">": left > right, "<": left < right, ">=": left >= right,
            "<=": left <= right}[op]


def parse_condition(text: str) -> Condition:
    """Parse ``text``; a ValueError says what is wrong."""
    tokens: list[tuple[str, str]] = []
    pos, text = 0, str(text)
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the condition {text!r} at {text[pos:].strip()!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    if not tokens:
        raise ValueError("empty condition")
    parser = _Parser(tokens, text)
    tree = parser.expr()
    if parser.i != len(tokens):
        raise ValueError(f"unexpected {tokens[parser.i][1]!r} in the condition {text!r}")
    return Condition(text, tree)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.i = tokens, text, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def word(self, *words: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "name" and tok[1].lower() in words:
            self.i += 1
            return True
        return False

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} in the condition {self.text!r}")

    def expr(self) -> tuple[Any, ...]:
        node = self.conj()
        while self.word("or"):
            node = ("or", node, self.conj())
        return node

    def conj(self) -> tuple[Any, ...]:
        node = self.neg()
        while self.word("and"):
            node = ("and", node, self.neg())
        return node

    def neg(self) -> tuple[Any, ...]:
        if self.word("not"):
            return ("not", self.neg())
        return self.atom()

    def atom(self) -> tuple[Any, ...]:
        tok = self.peek()
        if tok is None:
            raise self.fail("missing a slot name at the end")
        if tok == ("op", "("):
            self.i += 1
            node = self.expr()
            if self.peek() != ("op", ")"):
                raise self.fail("missing ')'")
            self.i += 1
            return node
        if tok[0] == "name" and tok[1].lower() in ("true", "false"):
            self.i += 1
            return ("const", tok[1].lower() == "true")
        if tok[0] != "name" or tok[1].lower() in _KEYWORDS:
            raise self.fail(f"expected a slot name, found {tok[1]!r}")
        self.i += 1
        name = tok[1]
        if self.word("is"):
            negated = self.word("not")
            if not self.word("set"):
                raise self.fail("expected 'is set' or 'is not set'")
            return ("not", ("isset", name)) if negated else ("isset", name)
        nxt = self.peek()
        if nxt and nxt[0] == "op" and nxt[1] not in "()":
            self.i += 1
            return ("cmp", name, nxt[1], self.value())
        return ("truthy", name)

    def value(self) -> JSON:
        tok = self.peek()
        if tok is None:
            raise self.fail("missing a value after the comparison")
        self.i += 1
        kind, raw = tok
        if kind == "num":
            return float(raw) if "." in raw else int(raw)
        if kind == "str":
            return raw[1:-1]
        if kind == "name":
            low = raw.lower()
            if low in ("true", "false"):
                return low == "true"
            if low in ("null", "none"):
                return None
            return raw
        raise self.fail(f"expected a value, found {raw!r}")


# --------------------------------------------------------------------------- elements


@dataclass(frozen=True, slots=True)
class AnnotatedExample:
    """One training example, its inline annotations (``[12345](order_id)``) resolved."""

    text: str
    entities: tuple[SpanLabel, ...]
    source: Source


@dataclass(frozen=True, slots=True)
class IntentSpec:
    name: str
    examples: tuple[AnnotatedExample, ...]
    source: Source


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """A slot: its type, and where its values come from.

    ``entities``: NLU entity names (trained or recogniser types) that fill it;
    ``from_answer``: whether the answer to the bot's question for it fills it;
    ``extract``: regexes tried over the message (group 1, or the whole match);
    ``values``: for categorical slots, each canonical value with its synonyms.
    """

    name: str
    type: str
    entities: tuple[str, ...] = ()
    from_answer: bool = True
    extract: tuple[str, ...] = ()
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pattern: str | None = None
    description: str = ""
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class ResponseVariant:
    text: str
    quick_replies: tuple[str, ...] = ()
    channel: str | None = None  # None: any channel without a variant of its own
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    name: str
    variants: tuple[ResponseVariant, ...]
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """A named action the flows may call: which slots it gets, which outputs it returns."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    description: str = ""
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class CollectStep:
    """Ask for ``slot`` until it has a valid value.

    ``ask``: the response that asks (default ``utter_ask_<slot>``); ``required``:
    False takes the slot when the user gives it but never asks;
    ``ask_before_filling``: ask even when the slot has a value (confirmations, so that
    a correction re-confirms); ``max_attempts``: failed answers before ``on_failure``
    runs (a flow name; default ``pattern_cannot_handle``, which hands over);
    ``allow_digressions``: False takes any message as the answer (a free-text description
    that reads like another intent), only cancelling still works.
    """

    slot: str
    ask: str
    required: bool = True
    ask_before_filling: bool = False
    max_attempts: int | None = None
    on_failure: str | None = None
    invalid: str | None = None
    allow_digressions: bool = True
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class ActionStep:
    """Call ``action`` with ``inputs`` (slot names) and wait for its result; ``outputs``
    maps the action's outputs to slots. On failure ``on_error`` (a response) is said and
    the flow ends: nothing after the step may claim the action happened. When the business
    system could not be reached (the result's kind ``unavailable`` or ``timeout``),
    ``on_unavailable`` is said instead, if given ("I can't reach your account right now").
    When a write went out and no answer came (kind ``unknown``: it may have been done),
    ``on_unknown`` is said, by default ``utter_action_outcome_unknown``: never "nothing was
    done"."""

    action: str
    inputs: tuple[str, ...] = ()
    outputs: Mapping[str, str] = field(default_factory=dict)
    on_error: str | None = None
    on_unavailable: str | None = None
    on_unknown: str | None = None
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class SetSlotsStep:
    values: Mapping[str, JSON]
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class BranchStep:
    """The first case whose condition holds (None: ``else``) jumps to its target: a step
    ``id`` of the same flow, or ``end``. No case holding: the next step."""

    cases: tuple[tuple[Condition | None, str], ...]
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class LinkStep:
    """End this flow and start ``flow`` in its place (it keeps this flow's slots until it
    ends)."""

    flow: str
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class CallStep:
    """Run ``flow``, then come back to the next step of this one."""

    flow: str
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class SayStep:
    response: str
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class EndStep:
    id: str | None = None
    source: Source = NOWHERE


@dataclass(frozen=True, slots=True)
class HandoffStep:
    """Hand the conversation to a human: sets the state's handoff flag (the bot stays quiet
    until the session ends or the handoff is released)."""

    id: str | None = None
    source: Source = NOWHERE


Step = (CollectStep | ActionStep | SetSlotsStep | BranchStep | LinkStep | CallStep | SayStep
        | EndStep | HandoffStep)
SaySpec = SayStep  # an alias kept for readers looking for "say"


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    steps: tuple[Step, ...]
    title: str = ""
    description: str = ""
    start_intents: tuple[str, ...] = ()
    start_condition: Condition | None = None
    persisted_slots: tuple[str, ...] = ()
    source: Source = NOWHERE

    @property
    def label(self) -> str:
        return self.title or self.name.replace("_", " ")

    def step_index(self, step_id: str) -> int | None:
        for i, step in enumerate(self.steps):
            if step.id == step_id:
                return i
        return None

    def collected_slots(self) -> tuple[str, ...]:
        return tuple(s.slot for s in self.steps if isinstance(s, CollectStep))

    def set_slots(self) -> frozenset[str]:
        """Every slot this flow may set: collects, set_slots and action outputs."""
        out: set[str] = set(self.collected_slots())
        for s in self.steps:
            if isinstance(s, SetSlotsStep):
                out.update(s.values)
            elif isinstance(s, ActionStep):
                out.update(s.outputs.values())
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class NluOptions:
    """How the bot's NLU model is trained (``bot.yml`` ``nlu:``)."""

    oos_intent: str = "oos"
    validation_fraction: float = 0.15
    id_patterns: Mapping[str, str] = field(default_factory=dict)
    default_country_code: str = ""
    context_encoder: str | None = None


@dataclass(frozen=True, slots=True)
class KnowledgeSettings:
    """Which messages go to knowledge retrieval: these intents, and (``out_of_scope``)
    messages the NLU marks out of scope, when the bot has documents."""

    intents: tuple[str, ...] = ()
    out_of_scope: bool = True


@dataclass(frozen=True, slots=True)
class FallbackSettings:
    """``min_confidence``: below it an intent starts nothing (cannot-handle);
    ``digression_confidence``: an intent this sure interrupts a question instead of
    answering it; ``clarify_margin``: two flow intents this close (and the top one
    under ``clarify_below``) make the bot ask which; ``max_attempts``: failed answers to
    one question before the cannot-handle pattern hands over; ``rephrase_attempts``:
    messages not understood in a row before it does."""

    min_confidence: float = 0.4
    digression_confidence: float = 0.7
    clarify_margin: float = 0.1
    clarify_below: float = 0.8
    max_attempts: int = 2
    rephrase_attempts: int = 2


@dataclass(frozen=True, slots=True)
class BotSettings:
    name: str = "bot"
    language: str = "en"
    default_currency: str = "EUR"
    session_timeout_s: int = 1800
    history_turns: int = 10
    #: How long a handoff request waits for a person before the bot takes the
    #: conversation back (``pattern_handoff_expired``); bot.yml ``handoff: timeout_minutes``.
    handoff_timeout_s: int = 600
    nlu: NluOptions = field(default_factory=NluOptions)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    cancel_intents: tuple[str, ...] = ("cancel",)
    affirm_intents: tuple[str, ...] = ("affirm",)
    deny_intents: tuple[str, ...] = ("deny",)
    chitchat: Mapping[str, str] = field(default_factory=dict)  # intent -> response
    correction_cues: tuple[str, ...] = ("make it", "change it to", "change that to", "actually",
                                        "instead", "i meant", "i mean", "no,", "not ")
    source: Source = NOWHERE


@dataclass(frozen=True)
class Bot:
    """A loaded, validated bot (see :mod:`agents.dialogue.loader`)."""

    folder: Path
    settings: BotSettings
    intents: Mapping[str, IntentSpec]
    slots: Mapping[str, SlotSpec]
    responses: Mapping[str, ResponseSpec]
    flows: Mapping[str, Flow]
    actions: Mapping[str, ActionSpec]
    knowledge_files: tuple[Path, ...] = ()
    version: str = ""  # the content hash of the folder
    warnings: tuple[str, ...] = ()

    def content_hash(self) -> str:
        """A hash of every file of the folder (names and bytes), taken at load time."""
        return self.version

    @property
    def has_knowledge(self) -> bool:
        return bool(self.knowledge_files)

    def training_examples(self) -> list[Example]:
        """The intents' examples as NLU training examples, inline annotations as spans."""
        return [Example(ex.text, intent.name, ex.entities)
                for intent in self.intents.values() for ex in intent.examples]

    def flow_for_intent(self, intent: str) -> Flow | None:
        for flow in self.flows.values():
            if intent in flow.start_intents:
                return flow
        return None

    def entity_slots(self) -> dict[str, list[str]]:
        """Entity name → the slots it fills."""
        out: dict[str, list[str]] = {}
        for slot in self.slots.values():
            for entity in slot.entities:
                out.setdefault(entity, []).append(slot.name)
        return out
