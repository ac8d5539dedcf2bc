"""Schema-Guided Dialogue (SGD) evaluation of a bot: dialogue state tracking metrics.

SGD (Rastogi et al. 2020) annotates every user turn of a dialogue with, for each service
in it, the *state* a tracker should hold: the active intent, the slots the user just
requested, and every slot value the user has given so far. ``parley dialogue evaluate``
replays each dialogue's user turns through a bot's dialogue manager and compares the
state it holds after each one with that annotation, using the definitions of the DSTC8
evaluation (google-research ``schema_guided_dst/metrics.py`` and ``evaluate.py``):

- **active intent accuracy**: the frame's predicted active intent equals the reference's
  (``NONE`` when there is none).
- **requested slots F1**: F1 of the predicted against the reference requested slots of
  the frame; a frame where both are empty scores 1.
- **average goal accuracy**: over the slots that have a value in the reference, the mean
  of their scores; a frame without any is left out of the average.
- **joint goal accuracy**: the product of the scores of *every* slot of the service (a
  slot neither side sets scores 1, one side only 0), so one wrong slot zeroes the frame.

A categorical slot scores 1 when the predicted value equals the reference's first value;
a non-categorical one scores the best fuzzy match against any of the reference's values:
fuzzywuzzy's ``token_sort_ratio`` / 100 (lower-cased, non-alphanumerics to spaces, words
sorted, then a difflib similarity; :func:`fuzzy_match`). Every metric is a mean over
frames of the service. The official scripts use fuzzywuzzy, which with
python-Levenshtein installed swaps difflib for its Levenshtein ratio; the two agree on
equal and disjoint strings and differ by a point or two in between.

How the replay feeds the manager (what the dataset's system side did, since our bot's
own replies are not the dataset's): before each user turn, the slot the dataset's system
had just asked for (its ``REQUEST`` act) becomes the state's requested slot, and an
intent it had just offered (``OFFER_INTENT``) is what an affirming answer means. The
mapping from the schema's names to the bot's (flows, slots, cues for requested slots)
is the bot folder's ``sgd.yml`` (:class:`SgdMapping`). After a flow ends, the active
intent stays the last one the user pursued, as in SGD's annotation.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from kernel.errors import ParleyError

__all__ = [
    "NONE_INTENT",
    "FrameScores",
    "FrameState",
    "IntentSchema",
    "Prediction",
    "ServiceSchema",
    "SgdDataError",
    "SgdMapping",
    "SgdMetrics",
    "SlotSchema",
    "SystemContext",
    "TrackedState",
    "Tracker",
    "UserTurnRecord",
    "aggregate",
    "evaluate_dialogues",
    "format_value",
    "fuzzy_match",
    "hypothesis_frame",
    "load_dialogues",
    "load_mapping",
    "load_schema",
    "score_frame",
    "user_turns",
]

NONE_INTENT = "NONE"


class SgdDataError(ParleyError, ValueError):
    """An SGD schema, dialogues or mapping file that cannot be read (names file and place)."""


# --------------------------------------------------------------------------- schema and data


@dataclass(frozen=True, slots=True)
class SlotSchema:
    name: str
    categorical: bool
    possible_values: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class IntentSchema:
    name: str
    required_slots: tuple[str, ...] = ()
    optional_slots: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class ServiceSchema:
    name: str
    slots: tuple[SlotSchema, ...]
    intents: tuple[IntentSchema, ...]
    description: str = ""

    def slot(self, name: str) -> SlotSchema | None:
        return next((s for s in self.slots if s.name == name), None)


def load_schema(path: Path) -> dict[str, ServiceSchema]:
    """Every service of an SGD schema file, by name."""
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise SgdDataError(f"{path}: expected a list of services")
    services: dict[str, ServiceSchema] = {}
    for i, svc in enumerate(raw):
        try:
            slots = tuple(SlotSchema(str(s["name"]), bool(s["is_categorical"]),
                                     tuple(str(v) for v in s.get("possible_values", ())),
                                     str(s.get("description", "")))
                          for s in svc["slots"])
            intents = tuple(IntentSchema(str(t["name"]), tuple(t.get("required_slots", ())),
                                         dict(t.get("optional_slots", {})),
                                         str(t.get("description", "")))
                            for t in svc["intents"])
            services[str(svc["service_name"])] = ServiceSchema(
                str(svc["service_name"]), slots, intents, str(svc.get("description", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise SgdDataError(f"{path}: service #{i}: missing or malformed field {exc}") from exc
    return services


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SgdDataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise SgdDataError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc


def load_dialogues(path: Path) -> list[dict[str, Any]]:
    """The dialogues of an SGD dialogues file (a list of ``{dialogue_id, services, turns}``)."""
    raw = _read_json(path)
    if not isinstance(raw, list) or not all(isinstance(d, dict) and "turns" in d
                                            and "dialogue_id" in d for d in raw):
        raise SgdDataError(f"{path}: expected a list of dialogues with dialogue_id and turns")
    return raw


@dataclass(frozen=True, slots=True)
class FrameState:
    """A service's dialogue state after a user turn (schema names)."""

    active_intent: str = NONE_INTENT
    requested_slots: tuple[str, ...] = ()
    slot_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_sgd(cls, state: Mapping[str, Any]) -> FrameState:
        return cls(str(state.get("active_intent") or NONE_INTENT),
                   tuple(state.get("requested_slots", ())),
                   {k: tuple(str(x) for x in v) for k, v in state.get("slot_values", {}).items()})


@dataclass(frozen=True, slots=True)
class SystemContext:
    """What the dataset's system had just done for the service before a user turn."""

    requested_slot: str | None = None
    offered_intent: str | None = None
    confirming: bool = False  # the system asked the user to confirm (its CONFIRM act)


@dataclass(frozen=True, slots=True)
class UserTurnRecord:
    """One scored frame: a user turn of a dialogue that has a frame for the service."""

    dialogue_id: str
    turn_index: int  # 0-based index in the dialogue's turns
    text: str
    context: SystemContext
    reference: FrameState


def user_turns(dialogue: Mapping[str, Any], service: str) -> Iterator[UserTurnRecord]:
    """The user turns of one dialogue that carry a frame of ``service``, in order."""
    context = SystemContext()
    for index, turn in enumerate(dialogue["turns"]):
        frame = next((f for f in turn.get("frames", ()) if f.get("service") == service), None)
        if turn.get("speaker") == "SYSTEM":
            acts = frame.get("actions", ()) if frame else ()
            requested = next((a["slot"] for a in acts if a.get("act") == "REQUEST"), None)
            offered = next((a["values"][0] for a in acts
                            if a.get("act") == "OFFER_INTENT" and a.get("values")), None)
            confirming = any(a.get("act") == "CONFIRM" for a in acts)
            context = SystemContext(requested, offered, confirming)
            continue
        if frame is not None and "state" in frame:
            yield UserTurnRecord(str(dialogue["dialogue_id"]), index, str(turn["utterance"]),
                                 context, FrameState.from_sgd(frame["state"]))
        context = SystemContext()


# --------------------------------------------------------------------------- metrics

_NON_WORD = re.compile(r"\W", re.UNICODE)


def _process(text: str) -> str:
    """fuzzywuzzy's ``full_process`` (force_ascii) and token sort."""
    ascii_only = "".join(c for c in text if ord(c) < 128)  # its asciidammit drops the rest
    return " ".join(sorted(_NON_WORD.sub(" ", ascii_only).lower().split()))


def fuzzy_match(reference: str, hypothesis: str) -> float:
    """fuzzywuzzy ``token_sort_ratio(reference, hypothesis) / 100`` (difflib flavour)."""
    a, b = _process(reference), _process(hypothesis)
    if not a or not b:
        return 0.0
    return round(100 * difflib.SequenceMatcher(None, a, b).ratio()) / 100.0


def _f1(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    ref, hyp = Counter(reference), Counter(hypothesis)
    true_positive = sum((ref & hyp).values())
    precision = true_positive / sum(hyp.values()) if hyp else 1.0
    recall = true_positive / sum(ref.values()) if ref else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@dataclass(frozen=True, slots=True)
class FrameScores:
    active_intent: float
    requested_slots_f1: float
    average_goal: float | None  # None: the reference sets no slot
    joint_goal: float


def score_frame(reference: FrameState, hypothesis: FrameState,
                service: ServiceSchema) -> FrameScores:
    """The DSTC8 metrics of one frame (module docstring)."""
    scores: list[float] = []
    active: list[bool] = []
    for slot in service.slots:
        ref = reference.slot_values.get(slot.name)
        hyp = hypothesis.slot_values.get(slot.name)
        active.append(bool(ref))
        if ref and hyp:
            if slot.categorical:
                scores.append(float(ref[0] == hyp[0]))
            else:
                scores.append(max(fuzzy_match(r, hyp[0]) for r in ref))
        else:
            scores.append(1.0 if not ref and not hyp else 0.0)
    active_scores = [s for s, a in zip(scores, active, strict=True) if a]
    joint = 1.0
    for s in scores:
        joint *= s
    return FrameScores(
        float(reference.active_intent == hypothesis.active_intent),
        _f1(reference.requested_slots, hypothesis.requested_slots),
        sum(active_scores) / len(active_scores) if active_scores else None,
        joint)


@dataclass(frozen=True, slots=True)
class SgdMetrics:
    joint_goal_accuracy: float
    average_goal_accuracy: float
    active_intent_accuracy: float
    requested_slots_f1: float
    n_frames: int

    def as_json(self) -> dict[str, Any]:
        return {"joint_goal_accuracy": round(self.joint_goal_accuracy, 4),
                "average_goal_accuracy": round(self.average_goal_accuracy, 4),
                "active_intent_accuracy": round(self.active_intent_accuracy, 4),
                "requested_slots_f1": round(self.requested_slots_f1, 4),
                "n_frames": self.n_frames}


def aggregate(frames: Sequence[FrameScores]) -> SgdMetrics:
    """Means over frames, as ``evaluate.py`` macro-averages them (NA frames left out)."""
    if not frames:
        raise SgdDataError("no frame to score: the dialogues have no user turn for the service")
    goals = [f.average_goal for f in frames if f.average_goal is not None]
    n = len(frames)
    return SgdMetrics(sum(f.joint_goal for f in frames) / n,
                      sum(goals) / len(goals) if goals else 0.0,
                      sum(f.active_intent for f in frames) / n,
                      sum(f.requested_slots_f1 for f in frames) / n, n)


# --------------------------------------------------------------------------- the bot side


@dataclass(frozen=True, slots=True)
class SgdMapping:
    """The bot folder's ``sgd.yml``: how the bot's names map to one service's schema.

    ``intents``: schema intent → the bot's flow names that pursue it; ``slots``: schema
    slot → bot slot (a slot not listed maps to the bot slot of the same name);
    ``requested_slots``: schema slot → regexes (case-insensitive) that, found in a user
    message, mean the user asked for that slot's value; ``ends_intents``: the bot's
    intents that, understood in a turn after which no flow runs ("no thanks, that's
    all"), end the active intent (SGD's annotation goes back to ``NONE`` there);
    ``values``: schema slot → {bot value: schema value} for values spelled differently
    (a bot's ``any`` account is SGD's ``dontcare``).
    """

    service: str
    intents: Mapping[str, tuple[str, ...]]
    slots: Mapping[str, str]
    requested_slots: Mapping[str, tuple[re.Pattern[str], ...]]
    ends_intents: tuple[str, ...] = ()
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def intent_of_flow(self, flow: str | None) -> str | None:
        for intent, flows in self.intents.items():
            if flow in flows:
                return intent
        return None

    def bot_slot(self, schema_slot: str) -> str:
        return self.slots.get(schema_slot, schema_slot)

    def requested_in(self, text: str) -> tuple[str, ...]:
        return tuple(slot for slot, patterns in self.requested_slots.items()
                     if any(p.search(text) for p in patterns))


def load_mapping(path: Path, service: ServiceSchema) -> SgdMapping:
    """Read ``sgd.yml``; names it gives are checked against the service's schema."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SgdDataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SgdDataError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML") from exc
    if not isinstance(raw, dict):
        raise SgdDataError(f"{path}: expected a mapping with intents, slots, requested_slots")
    problems: list[str] = []
    unknown = sorted(set(raw) - {"service", "intents", "slots", "requested_slots",
                                 "ends_intents", "values"})
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(str, unknown))} (expected service, "
                        "intents, slots, requested_slots, ends_intents, values)")
    if raw.get("service", service.name) != service.name:
        problems.append(f"service: this mapping is for {raw['service']!r}, not {service.name!r}")
    schema_intents = {i.name for i in service.intents}
    schema_slots = {s.name for s in service.slots}
    intents: dict[str, tuple[str, ...]] = {}
    for name, flows in (raw.get("intents") or {}).items():
        if name not in schema_intents:
            problems.append(f"intents: {name!r} is not an intent of {service.name}")
        intents[str(name)] = (flows,) if isinstance(flows, str) else tuple(map(str, flows))
    slots: dict[str, str] = {}
    for name, bot_slot in (raw.get("slots") or {}).items():
        if name not in schema_slots:
            problems.append(f"slots: {name!r} is not a slot of {service.name}")
        slots[str(name)] = str(bot_slot)
    requested: dict[str, tuple[re.Pattern[str], ...]] = {}
    for name, patterns in (raw.get("requested_slots") or {}).items():
        if name not in schema_slots:
            problems.append(f"requested_slots: {name!r} is not a slot of {service.name}")
        compiled = []
        for rx in [patterns] if isinstance(patterns, str) else patterns:
            try:
                compiled.append(re.compile(str(rx), re.IGNORECASE))
            except re.error as exc:
                problems.append(f"requested_slots: {name}: bad regex {rx!r} ({exc})")
        requested[str(name)] = tuple(compiled)
    if problems:
        raise SgdDataError("\n".join(f"{path}: {p}" for p in problems))
    values: dict[str, dict[str, str]] = {}
    for name, pairs in (raw.get("values") or {}).items():
        if name not in schema_slots:
            problems.append(f"values: {name!r} is not a slot of {service.name}")
        if not isinstance(pairs, dict):
            problems.append(f"values: {name}: expected {{bot value: schema value}}")
            continue
        values[str(name)] = {str(k).casefold(): str(v) for k, v in pairs.items()}
    if problems:
        raise SgdDataError("\n".join(f"{path}: {p}" for p in problems))
    ends = raw.get("ends_intents") or ()
    return SgdMapping(service.name, intents, slots, requested,
                      (ends,) if isinstance(ends, str) else tuple(map(str, ends)), values)


@dataclass(frozen=True, slots=True)
class TrackedState:
    """What a tracker holds after a user turn, in the bot's names."""

    active_flow: str | None
    slots: Mapping[str, Any]
    flows_started: tuple[str, ...] = ()  # flows the turn started (a finished one included)
    intent: str = ""  # what the NLU understood of the turn
    answer: bool | None = None  # the message read as a yes (True) or a no (False)
    surface: Mapping[str, str] = field(default_factory=dict)
    """For a slot, the words the user gave its current value in (``1,490 bucks``), when
    known: SGD's non-categorical values are spans of the user's messages."""


class Tracker(Protocol):
    """A bot's dialogue manager seen turn by turn (:mod:`agents.dialogue.sgd_cli` builds it)."""

    def reset(self) -> None:
        """Start a new conversation."""
        ...

    def user_turn(self, text: str, context: SystemContext) -> TrackedState: ...


def format_value(value: Any) -> str | None:
    """A bot slot value as SGD writes values: amounts ``$1,500``, booleans ``True``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping):
        if "value" not in value:
            return None
        number, currency = value["value"], str(value.get("currency") or "")
        shown = _number_text(number)
        return f"${shown}" if currency in ("USD", "$", "") else f"{shown} {currency}"
    if isinstance(value, float | int):
        return _number_text(value)
    return str(value)


def _number_text(number: Any) -> str:
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, int):
        return f"{number:,}"
    if isinstance(number, float):
        return f"{number:,.2f}"
    return str(number)


def hypothesis_frame(tracked: TrackedState, text: str, mapping: SgdMapping,
                     service: ServiceSchema, previous_intent: str,
                     context: SystemContext | None = None) -> FrameState:
    """The SGD frame a tracker's state stands for: the active intent persists until an
    ``ends_intents`` answer with no flow left, or one that declines an offered intent."""
    if context is not None and context.offered_intent and (
            tracked.intent in mapping.ends_intents or tracked.answer is False):
        previous_intent = NONE_INTENT
    intent = mapping.intent_of_flow(tracked.active_flow)
    if intent is None:
        started = [mapping.intent_of_flow(f) for f in tracked.flows_started]
        intent = next((i for i in reversed(started) if i is not None), None)
    if intent is None:
        ended = tracked.intent in mapping.ends_intents and not any(
            mapping.intent_of_flow(f) for f in (tracked.active_flow, *tracked.flows_started))
        intent = NONE_INTENT if ended else previous_intent
    values: dict[str, tuple[str, ...]] = {}
    for slot in service.slots:
        bot_slot = mapping.bot_slot(slot.name)
        value = tracked.slots.get(bot_slot)
        shown = format_value(value)
        if shown is None or shown == "":
            continue
        shown = mapping.values.get(slot.name, {}).get(shown.casefold(), shown)
        if slot.categorical:
            shown = _canonical(shown, slot)
        elif bot_slot in tracked.surface:
            shown = tracked.surface[bot_slot]
        values[slot.name] = (shown,)
    return FrameState(intent, mapping.requested_in(text), values)


def _canonical(value: str, slot: SlotSchema) -> str:
    """A categorical value as the schema spells it: case ignored, then a value one is a
    prefix of the other ("saving" → "savings"); else the value as it is (scored wrong)."""
    low = value.casefold()
    for possible in slot.possible_values:
        if possible.casefold() == low:
            return possible
    for possible in slot.possible_values:
        p = possible.casefold()
        if len(low) >= 3 and (p.startswith(low) or low.startswith(p)):
            return possible
    return value


@dataclass(frozen=True, slots=True)
class Prediction:
    record: UserTurnRecord
    hypothesis: FrameState

    def as_json(self, service: str) -> dict[str, Any]:
        return {"dialogue_id": self.record.dialogue_id, "turn_index": self.record.turn_index,
                "service": service, "active_intent": self.hypothesis.active_intent,
                "requested_slots": list(self.hypothesis.requested_slots),
                "slot_values": {k: v[0] for k, v in self.hypothesis.slot_values.items()}}


def evaluate_dialogues(dialogues: Iterable[Mapping[str, Any]], service: ServiceSchema,
                       mapping: SgdMapping, tracker: Tracker
                       ) -> tuple[SgdMetrics, list[Prediction]]:
    """Replay every dialogue with a frame of ``service`` through ``tracker`` and score it."""
    predictions: list[Prediction] = []
    scores: list[FrameScores] = []
    for dialogue in dialogues:
        records = list(user_turns(dialogue, service.name))
        if not records:
            continue
        tracker.reset()
        intent = NONE_INTENT
        for record in records:
            tracked = tracker.user_turn(record.text, record.context)
            hypothesis = hypothesis_frame(tracked, record.text, mapping, service, intent,
                                          record.context)
            intent = hypothesis.active_intent
            predictions.append(Prediction(record, hypothesis))
            scores.append(score_frame(record.reference, hypothesis, service))
    return aggregate(scores), predictions
