"""Reading a bot folder, and every problem in it with its file and line.

A bot folder::

    bot.yml         settings: name, currency, session timeout, NLU options, knowledge routing,
                    fallback thresholds, which intents cancel / affirm / deny / are chitchat
    intents.yml     intents and their examples, entities annotated inline: [12345](order_id)
    slots.yml       slots: type, the entities that fill them, validation
    responses.yml   what the bot says: variants, quick replies, per-channel variants, {slot}s
    flows.yml       flows: how each starts, and its steps
    actions.yml     (optional) the named actions flows may call, with inputs and outputs
    knowledge/      (optional) documents the bot answers from: .jsonl, .md, .txt, .html

:func:`validate_bot` reads everything and returns every problem it finds (YAML syntax,
unknown keys, unknown names, bad regexes, annotations naming an entity no slot uses, too
few examples to calibrate), never only the first; :func:`load_bot` raises
:class:`BotFolderError` carrying them when any is an error. Line numbers come from the
YAML parser's node marks, kept beside the values while converting (:class:`_Map`,
:class:`_Seq`).

The default conversation-repair flows and their responses (``pattern_cancel``,
``pattern_cannot_handle``, ...) are read from ``patterns.yml`` beside this module; a bot
overrides one by defining a flow or response of the same name.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.dialogue.domain import (
    SLOT_TYPES,
    ActionSpec,
    ActionStep,
    AnnotatedExample,
    Bot,
    BotSettings,
    BranchStep,
    CallStep,
    CollectStep,
    Condition,
    DialogueError,
    EndStep,
    FallbackSettings,
    Flow,
    HandoffStep,
    IntentSpec,
    KnowledgeSettings,
    LinkStep,
    NluOptions,
    ResponseSpec,
    ResponseVariant,
    SayStep,
    SetSlotsStep,
    SlotSpec,
    Source,
    Step,
    parse_condition,
)
from agents.nlu.data import parse_annotations

__all__ = ["BOT_FILES", "CONTEXT_NAMES", "BotFolderError", "Problem", "load_bot",
           "validate_bot"]

BOT_FILES = ("bot.yml", "intents.yml", "slots.yml", "responses.yml", "flows.yml", "actions.yml")
KNOWLEDGE_SUFFIXES = frozenset({".jsonl", ".md", ".markdown", ".txt", ".html", ".htm"})
PATTERNS_FILE = Path(__file__).with_name("patterns.yml")
CONTEXT_NAMES = frozenset({"flow", "slot", "value", "attempt", "options", "previous_flow",
                           "agent"})
"""Names pattern flows and their responses may use besides slots (the pattern's context)."""

MIN_CALIBRATION_EXAMPLES = 10
"""Validation examples below which training keeps the default out-of-scope threshold
(agents/nlu/train.py calibrates only on a held-out split of at least this size)."""


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {tag}{self.message}"


class BotFolderError(DialogueError):
    """A bot folder with errors; ``problems`` lists every one (warnings included)."""

    def __init__(self, folder: Path, problems: Iterable[Problem]) -> None:
        self.folder = folder
        self.problems = tuple(problems)
        super().__init__(folder, self.problems)

    def __str__(self) -> str:
        errors = [p for p in self.problems if p.severity == "error"]
        head = f"bot folder {self.folder} has {len(errors)} error(s):"
        return "\n".join([head, *(str(p) for p in self.problems)])


# --------------------------------------------------------------------------- YAML with lines


class _Map(dict[str, Any]):
    """A YAML mapping that remembers its line and each key's line."""

    line: int = 0
    key_lines: dict[str, int]


class _Seq(list[Any]):
    """A YAML sequence that remembers its line and each item's line."""

    line: int = 0
    item_lines: list[int]


class _Reader:
    """Collects problems while turning one YAML file into checked values."""

    def __init__(self, folder: Path, problems: list[Problem]) -> None:
        self.folder, self.problems = folder, problems

    def problem(self, file: str, line: int, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(file, line, message, severity))

    def read(self, path: Path, file: str) -> _Map | None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.problem(file, 1, f"not UTF-8 text: {exc.reason}")
            return None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            hint = ""
            if "'?'" in str(exc.problem) or "':'" in str(exc.problem):
                hint = " (put quotes around a text with '?' or ': ' inside [...] or {...})"
            self.problem(file, line, f"YAML syntax: {exc.problem or exc.context}{hint}")
            return None
        except yaml.YAMLError as exc:
            self.problem(file, 1, f"YAML syntax: {exc}")
            return None
        if node is None:
            empty = _Map()
            empty.line, empty.key_lines = 1, {}
            return empty
        data = self.convert(node, file)
        if not isinstance(data, _Map):
            self.problem(file, node.start_mark.line + 1, "expected a mapping at the top")
            return None
        return data

    def convert(self, node: yaml.Node, file: str) -> Any:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = _Map()
            out.line, out.key_lines = line, {}
            for key_node, value_node in node.value:
                key = self.convert(key_node, file)
                key_line = key_node.start_mark.line + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problem(file, key_line, "merge keys (<<) are not supported")
                    continue
                key = str(key)
                if key in out:
                    self.problem(file, key_line, f"duplicate key {key!r} "
                                                 f"(first at line {out.key_lines[key]})")
                    continue
                out[key] = self.convert(value_node, file)
                out.key_lines[key] = key_line
            return out
        if isinstance(node, yaml.SequenceNode):
            seq = _Seq()
            seq.line, seq.item_lines = line, []
            for item in node.value:
                seq.append(self.convert(item, file))
                seq.item_lines.append(item.start_mark.line + 1)
            return seq
        try:
            return _scalar(node)
        except ValueError as exc:
            self.problem(file, line, f"bad value {node.value!r}: {exc}")
            return node.value

    # checked access -------------------------------------------------------------------

    def keys(self, data: _Map, file: str, allowed: Iterable[str], where: str) -> None:
        allowed = list(allowed)
        for key in data:
            if key not in allowed:
                self.problem(file, data.key_lines.get(key, data.line),
                             f"unknown key {key!r} in {where} (expected one of: "
                             f"{', '.join(allowed)})")

    def typed(self, data: _Map, key: str, file: str, kind: type | tuple[type, ...],
              default: Any, what: str) -> Any:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            self.problem(file, data.key_lines.get(key, data.line),
                         f"{key!r} must be {what}, got {_kind(value)}")
            return default
        return value

    def strings(self, data: _Map, key: str, file: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.problem(file, data.key_lines.get(key, data.line),
                         f"{key!r} must be a list of names")
            return ()
        return tuple(str(v) for v in value)

    def mapping(self, value: Any, file: str, line: int, what: str) -> _Map | None:
        if isinstance(value, _Map):
            return value
        self.problem(file, line, f"{what} must be a mapping, got {_kind(value)}")
        return None


def _scalar(node: yaml.ScalarNode) -> Any:
    """A scalar as PyYAML's safe loader would make it (dates stay strings)."""
    if node.tag == "tag:yaml.org,2002:timestamp":
        return str(node.value)
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node)
    finally:
        loader.dispose()


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", _Map: "a mapping", list: "a list", _Seq: "a list",
            str: f"the text {value!r}", bool: f"{value}", int: f"the number {value}",
            float: f"the number {value}"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- annotations

# --------------------------------------------------------------------------- the sections

_SETTINGS_KEYS = ("name", "language", "default_currency", "session_timeout_minutes",
                  "history_turns", "nlu", "knowledge", "fallback", "cancel_intents",
                  "affirm_intents", "deny_intents", "chitchat", "correction_cues", "handoff")
_NLU_KEYS = ("oos_intent", "validation_fraction", "id_patterns", "default_country_code",
             "context_encoder")
_FALLBACK_KEYS = ("min_confidence", "digression_confidence", "clarify_margin", "clarify_below",
                  "max_attempts", "rephrase_attempts")
_SLOT_KEYS = ("type", "entities", "from_answer", "extract", "values", "pattern", "description")
_FLOW_KEYS = ("title", "description", "start", "steps", "persisted_slots")
_STEP_KINDS = ("collect", "action", "set_slots", "branch", "link", "call", "say", "end",
               "handoff")
_STEP_OPTIONS: dict[str, tuple[str, ...]] = {
    "collect": ("ask", "required", "ask_before_filling", "max_attempts", "on_failure",
                "invalid", "allow_digressions"),
    "action": ("inputs", "outputs", "on_error", "on_unavailable", "on_unknown"),
}
DEFAULT_SLOT_ENTITIES: dict[str, tuple[str, ...]] = {
    "number": ("number",), "amount": ("amount",), "datetime": ("date", "time"),
}


@dataclass
class _Parts:
    """What the files define, before the cross-checks."""

    settings: BotSettings = field(default_factory=BotSettings)
    intents: dict[str, IntentSpec] = field(default_factory=dict)
    slots: dict[str, SlotSpec] = field(default_factory=dict)
    responses: dict[str, ResponseSpec] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)
    actions: dict[str, ActionSpec] = field(default_factory=dict)
    pattern_flows: frozenset[str] = frozenset()
    pattern_responses: frozenset[str] = frozenset()
    unreadable: frozenset[str] = frozenset()  # files whose YAML could not be read


def _settings(r: _Reader, data: _Map, file: str) -> BotSettings:
    r.keys(data, file, _SETTINGS_KEYS, "bot.yml")
    base = BotSettings()
    nlu_data = data.get("nlu")
    nlu = NluOptions()
    if nlu_data is not None and (m := r.mapping(nlu_data, file, data.key_lines["nlu"], "nlu")):
        r.keys(m, file, _NLU_KEYS, "nlu")
        patterns = r.typed(m, "id_patterns", file, dict, {}, "a mapping of entity to regex")
        for name, rx in patterns.items():
            _check_regex(r, str(rx), file, patterns.key_lines.get(name, m.line),
                         f"id pattern {name!r}", need_group=False)
        fraction = r.typed(m, "validation_fraction", file, (int, float), 0.15, "a number")
        if not 0 <= fraction < 0.5:
            r.problem(file, m.key_lines["validation_fraction"],
                      "'validation_fraction' must be in [0, 0.5)")
            fraction = 0.15
        country = str(r.typed(m, "default_country_code", file, (str, int), "", "digits"))
        if country and not country.isdigit():
            r.problem(file, m.key_lines["default_country_code"],
                      "'default_country_code' must be digits without '+'")
            country = ""
        nlu = NluOptions(
            oos_intent=str(r.typed(m, "oos_intent", file, str, "oos", "an intent name")),
            validation_fraction=float(fraction),
            id_patterns={str(k): str(v) for k, v in patterns.items()},
            default_country_code=country,
            context_encoder=r.typed(m, "context_encoder", file, str, None, "an encoder name"),
        )
    knowledge = KnowledgeSettings()
    if (k_data := data.get("knowledge")) is not None and (
            m := r.mapping(k_data, file, data.key_lines["knowledge"], "knowledge")):
        r.keys(m, file, ("intents", "out_of_scope"), "knowledge")
        knowledge = KnowledgeSettings(
            intents=r.strings(m, "intents", file),
            out_of_scope=bool(r.typed(m, "out_of_scope", file, bool, True, "true or false")))
    fallback = FallbackSettings()
    if (f_data := data.get("fallback")) is not None and (
            m := r.mapping(f_data, file, data.key_lines["fallback"], "fallback")):
        r.keys(m, file, _FALLBACK_KEYS, "fallback")
        values: dict[str, Any] = {}
        for key in _FALLBACK_KEYS:
            default = getattr(fallback, key)
            if isinstance(default, int):
                got = r.typed(m, key, file, int, default, "a whole number")
                if got < 1:
                    r.problem(file, m.key_lines[key], f"{key!r} must be at least 1")
                    got = default
            else:
                got = float(r.typed(m, key, file, (int, float), default, "a number"))
                if not 0 <= got <= 1:
                    r.problem(file, m.key_lines[key], f"{key!r} must be between 0 and 1")
                    got = default
            values[key] = got
        fallback = FallbackSettings(**values)
    chitchat: dict[str, str] = {}
    if (c_data := data.get("chitchat")) is not None and (
            m := r.mapping(c_data, file, data.key_lines["chitchat"], "chitchat")):
        chitchat = {str(k): "" if v is None else str(v) for k, v in m.items()}
    handoff_timeout_s = base.handoff_timeout_s
    if (h_data := data.get("handoff")) is not None and (
            m := r.mapping(h_data, file, data.key_lines["handoff"], "handoff")):
        r.keys(m, file, ("timeout_minutes",), "handoff")
        minutes = r.typed(m, "timeout_minutes", file, (int, float),
                          base.handoff_timeout_s / 60, "a number")
        if not math.isfinite(minutes) or minutes <= 0:  # YAML has .inf and .nan
            r.problem(file, m.key_lines["timeout_minutes"],
                      "'timeout_minutes' must be a number more than 0 (fractions too: 0.05 "
                      "is 3 seconds)")
        else:
            handoff_timeout_s = max(1, int(float(minutes) * 60))
    timeout = r.typed(data, "session_timeout_minutes", file, (int, float), 30, "a number")
    if not math.isfinite(timeout) or timeout <= 0:  # YAML has .inf and .nan
        r.problem(file, data.key_lines.get("session_timeout_minutes", 1),
                  "'session_timeout_minutes' must be a number more than 0")
        timeout = 30
    currency = str(r.typed(data, "default_currency", file, str, "EUR", "a currency code"))
    if not re.fullmatch(r"[A-Z]{3}", currency):
        r.problem(file, data.key_lines.get("default_currency", 1),
                  f"'default_currency' must be an ISO code like EUR, got {currency!r}")
    return BotSettings(
        name=str(r.typed(data, "name", file, str, "bot", "a name")),
        language=str(r.typed(data, "language", file, str, "en", "a language code")),
        default_currency=currency,
        session_timeout_s=int(float(timeout) * 60),
        history_turns=int(r.typed(data, "history_turns", file, int, 10, "a whole number")),
        handoff_timeout_s=handoff_timeout_s,
        nlu=nlu, knowledge=knowledge, fallback=fallback,
        cancel_intents=r.strings(data, "cancel_intents", file) or base.cancel_intents,
        affirm_intents=r.strings(data, "affirm_intents", file) or base.affirm_intents,
        deny_intents=r.strings(data, "deny_intents", file) or base.deny_intents,
        chitchat=chitchat,
        correction_cues=r.strings(data, "correction_cues", file) or base.correction_cues,
        source=Source(file, data.line),
    )


def _check_regex(r: _Reader, rx: str, file: str, line: int, what: str, *,
                 need_group: bool) -> bool:
    try:
        compiled = re.compile(rx)
    except re.error as exc:
        r.problem(file, line, f"{what}: bad regular expression {rx!r}: {exc}")
        return False
    if need_group and compiled.groups > 1:
        r.problem(file, line, f"{what}: use at most one capture group in {rx!r} "
                              f"(it is the value); write (?:...) for the others")
        return False
    return True


def _intents(r: _Reader, data: _Map, file: str) -> dict[str, IntentSpec]:
    r.keys(data, file, ("intents",), file)
    section = data.get("intents")
    if section is None:
        return {}
    m = r.mapping(section, file, data.key_lines["intents"], "'intents'")
    if m is None:
        return {}
    out: dict[str, IntentSpec] = {}
    for name, body in m.items():
        line = m.key_lines[name]
        examples_raw: Any = body
        if isinstance(body, _Map):
            r.keys(body, file, ("examples", "description"), f"intent {name!r}")
            examples_raw = body.get("examples", _Seq())
        if not isinstance(examples_raw, _Seq):
            r.problem(file, line, f"intent {name!r}: examples must be a list of texts")
            continue
        examples = []
        for text, ex_line in zip(examples_raw, examples_raw.item_lines, strict=True):
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                r.problem(file, ex_line, f"intent {name!r}: an example must be a text")
                continue
            try:
                plain, spans = parse_annotations(str(text))
            except ValueError as exc:
                r.problem(file, ex_line, f"intent {name!r}: {exc}")
                continue
            if plain.strip():
                examples.append(AnnotatedExample(plain, spans, Source(file, ex_line)))
        out[name] = IntentSpec(name, tuple(examples), Source(file, line))
    return out


def _slots(r: _Reader, data: _Map, file: str) -> dict[str, SlotSpec]:
    r.keys(data, file, ("slots",), file)
    section = data.get("slots")
    m = r.mapping(section, file, data.key_lines.get("slots", 1), "'slots'") if section else None
    out: dict[str, SlotSpec] = {}
    for name, body in (m or {}).items():
        line = m.key_lines[name] if m else 1
        spec = r.mapping(body, file, line, f"slot {name!r}")
        if spec is None:
            continue
        r.keys(spec, file, _SLOT_KEYS, f"slot {name!r}")
        kind = str(spec.get("type", "text"))
        if kind not in SLOT_TYPES:
            r.problem(file, spec.key_lines.get("type", line),
                      f"slot {name!r}: unknown type {kind!r} (one of {', '.join(SLOT_TYPES)})")
            kind = "text"
        values: dict[str, tuple[str, ...]] = {}
        raw_values = spec.get("values")
        if kind == "categorical":
            if isinstance(raw_values, _Seq):
                values = {str(v): () for v in raw_values}
            elif isinstance(raw_values, _Map):
                for value, synonyms in raw_values.items():
                    if synonyms is None:
                        values[value] = ()
                    elif isinstance(synonyms, _Seq):
                        values[value] = tuple(str(s) for s in synonyms)
                    else:
                        r.problem(file, raw_values.key_lines[value],
                                  f"slot {name!r}: the synonyms of {value!r} must be a list")
            if not values:
                r.problem(file, spec.key_lines.get("values", line),
                          f"slot {name!r}: a categorical slot needs 'values' (a list, or a "
                          f"mapping of each value to its synonyms)")
        elif raw_values is not None:
            r.problem(file, spec.key_lines["values"],
                      f"slot {name!r}: 'values' is for categorical slots, not {kind}")
        pattern = spec.get("pattern")
        if kind == "pattern":
            if not isinstance(pattern, str):
                r.problem(file, spec.key_lines.get("pattern", line),
                          f"slot {name!r}: a pattern slot needs 'pattern' (a regular expression)")
                pattern = None
            elif not _check_regex(r, pattern, file, spec.key_lines["pattern"],
                                  f"slot {name!r}", need_group=True):
                pattern = None
        elif pattern is not None:
            r.problem(file, spec.key_lines["pattern"],
                      f"slot {name!r}: 'pattern' is for pattern slots, not {kind}")
            pattern = None
        extract = r.strings(spec, "extract", file)
        extract = tuple(rx for rx in extract if _check_regex(
            r, rx, file, spec.key_lines.get("extract", line), f"slot {name!r} extract",
            need_group=True))
        entities = r.strings(spec, "entities", file)
        if "entities" not in spec:
            entities = (name, *DEFAULT_SLOT_ENTITIES.get(kind, ()))
        out[name] = SlotSpec(
            name=name, type=kind, entities=entities,
            from_answer=bool(r.typed(spec, "from_answer", file, bool, True, "true or false")),
            extract=extract, values=values, pattern=pattern,
            description=str(spec.get("description") or ""), source=Source(file, line))
    return out


def _variant(r: _Reader, raw: Any, file: str, line: int, name: str) -> ResponseVariant | None:
    if isinstance(raw, str):
        return ResponseVariant(raw, source=Source(file, line))
    spec = r.mapping(raw, file, line, f"a variant of response {name!r}")
    if spec is None:
        return None
    r.keys(spec, file, ("text", "quick_replies", "channel"), f"response {name!r}")
    text = spec.get("text")
    if not isinstance(text, str) or not text.strip():
        r.problem(file, line, f"response {name!r}: a variant needs 'text'")
        return None
    channel = spec.get("channel")
    return ResponseVariant(text, r.strings(spec, "quick_replies", file),
                           str(channel) if channel is not None else None, Source(file, line))


def _responses(r: _Reader, data: _Map, file: str) -> dict[str, ResponseSpec]:
    r.keys(data, file, ("responses",), file)
    section = data.get("responses")
    m = r.mapping(section, file, data.key_lines.get("responses", 1),
                  "'responses'") if section is not None else None
    out: dict[str, ResponseSpec] = {}
    for name, body in (m or {}).items():
        line = m.key_lines[name] if m else 1
        items: list[tuple[Any, int]]
        if isinstance(body, _Seq):
            items = list(zip(body, body.item_lines, strict=True))
        else:
            items = [(body, line)]
        variants = [v for raw, ln in items if (v := _variant(r, raw, file, ln, name))]
        for v in variants:
            try:
                list(string.Formatter().parse(v.text))
            except ValueError as exc:
                r.problem(file, v.source.line, f"response {name!r}: bad template: {exc} "
                                               f"(write {{{{ and }}}} for literal braces)")
        if not variants:
            r.problem(file, line, f"response {name!r} has no text")
            continue
        out[name] = ResponseSpec(name, tuple(variants), Source(file, line))
    return out


def _actions(r: _Reader, data: _Map, file: str) -> dict[str, ActionSpec]:
    r.keys(data, file, ("actions",), file)
    section = data.get("actions")
    m = r.mapping(section, file, data.key_lines.get("actions", 1),
                  "'actions'") if section is not None else None
    out: dict[str, ActionSpec] = {}
    for name, body in (m or {}).items():
        line = m.key_lines[name] if m else 1
        spec = body if body is not None else _Map()
        if not isinstance(spec, _Map):
            r.problem(file, line, f"action {name!r} must be a mapping")
            continue
        spec.line = getattr(spec, "line", line)
        spec.key_lines = getattr(spec, "key_lines", {})
        r.keys(spec, file, ("inputs", "outputs", "description"), f"action {name!r}")
        out[name] = ActionSpec(name, r.strings(spec, "inputs", file),
                               r.strings(spec, "outputs", file),
                               str(spec.get("description") or ""), Source(file, line))
    return out


def _step(r: _Reader, raw: Any, file: str, line: int, flow: str) -> Step | None:
    src = Source(file, line)
    if isinstance(raw, str):
        if raw == "end":
            return EndStep(source=src)
        if raw == "handoff":
            return HandoffStep(source=src)
        r.problem(file, line, f"flow {flow!r}: unknown step {raw!r} (a step is a mapping "
                              f"with one of: {', '.join(_STEP_KINDS)})")
        return None
    spec = r.mapping(raw, file, line, f"a step of flow {flow!r}")
    if spec is None:
        return None
    kinds = [k for k in _STEP_KINDS if k in spec]
    if len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        r.problem(file, line, f"flow {flow!r}: a step needs exactly one of "
                              f"{', '.join(_STEP_KINDS)} (found: {found})")
        return None
    kind = kinds[0]
    r.keys(spec, file, (kind, "id", *_STEP_OPTIONS.get(kind, ())), f"a {kind} step")
    step_id = str(spec["id"]) if spec.get("id") is not None else None
    value = spec[kind]
    vline = spec.key_lines[kind]

    def name_value() -> str | None:
        if isinstance(value, str) and value:
            return value
        r.problem(file, vline, f"flow {flow!r}: '{kind}' needs a name")
        return None

    if kind == "collect":
        if (slot := name_value()) is None:
            return None
        attempts = spec.get("max_attempts")
        if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
            r.problem(file, spec.key_lines["max_attempts"], "'max_attempts' must be at least 1")
            attempts = None
        return CollectStep(
            slot=slot, ask=str(spec.get("ask") or f"utter_ask_{slot}"),
            required=bool(r.typed(spec, "required", file, bool, True, "true or false")),
            ask_before_filling=bool(r.typed(spec, "ask_before_filling", file, bool, False,
                                            "true or false")),
            max_attempts=attempts,
            on_failure=r.typed(spec, "on_failure", file, str, None, "a flow name"),
            invalid=r.typed(spec, "invalid", file, str, None, "a response name"),
            allow_digressions=bool(r.typed(spec, "allow_digressions", file, bool, True,
                                           "true or false")),
            id=step_id, source=src)
    if kind == "action":
        if (name := name_value()) is None:
            return None
        outputs = spec.get("outputs") or {}
        if isinstance(outputs, list):
            outputs = {str(o): str(o) for o in outputs}
        if not isinstance(outputs, dict):
            r.problem(file, spec.key_lines["outputs"],
                      "'outputs' must map the action's outputs to slots")
            outputs = {}
        return ActionStep(name, r.strings(spec, "inputs", file),
                          {str(k): str(v) for k, v in outputs.items()},
                          r.typed(spec, "on_error", file, str, None, "a response name"),
                          r.typed(spec, "on_unavailable", file, str, None, "a response name"),
                          r.typed(spec, "on_unknown", file, str, None, "a response name"),
                          id=step_id, source=src)
    if kind == "set_slots":
        if not isinstance(value, dict):
            r.problem(file, vline, "'set_slots' must map slots to values")
            return None
        return SetSlotsStep(dict(value), id=step_id, source=src)
    if kind == "branch":
        return _branch(r, value, file, vline, flow, step_id, src)
    if kind in ("link", "call", "say"):
        if (name := name_value()) is None:
            return None
        if kind == "link":
            return LinkStep(name, id=step_id, source=src)
        if kind == "call":
            return CallStep(name, id=step_id, source=src)
        return SayStep(name, id=step_id, source=src)
    if kind == "end":
        return EndStep(id=step_id, source=src)
    return HandoffStep(id=step_id, source=src)


def _branch(r: _Reader, value: Any, file: str, line: int, flow: str, step_id: str | None,
            src: Source) -> BranchStep | None:
    if not isinstance(value, _Seq) or not value:
        r.problem(file, line, f"flow {flow!r}: 'branch' must be a list of "
                              f"{{if: CONDITION, then: STEP_ID}} and an optional {{else: STEP_ID}}")
        return None
    cases: list[tuple[Condition | None, str]] = []
    for case, cline in zip(value, value.item_lines, strict=True):
        spec = r.mapping(case, file, cline, "a branch case")
        if spec is None:
            continue
        if "else" in spec:
            r.keys(spec, file, ("else",), "an else case")
            cases.append((None, str(spec["else"])))
            continue
        r.keys(spec, file, ("if", "then"), "a branch case")
        if "if" not in spec or "then" not in spec:
            r.problem(file, cline, "a branch case needs 'if' and 'then' (or is {else: STEP_ID})")
            continue
        try:
            condition = parse_condition(str(spec["if"]))
        except ValueError as exc:
            r.problem(file, spec.key_lines["if"], str(exc))
            continue
        cases.append((condition, str(spec["then"])))
    return BranchStep(tuple(cases), id=step_id, source=src)


def _flows(r: _Reader, data: _Map, file: str) -> dict[str, Flow]:
    r.keys(data, file, ("flows",), file)
    section = data.get("flows")
    m = r.mapping(section, file, data.key_lines.get("flows", 1),
                  "'flows'") if section is not None else None
    out: dict[str, Flow] = {}
    for name, body in (m or {}).items():
        line = m.key_lines[name] if m else 1
        spec = r.mapping(body, file, line, f"flow {name!r}")
        if spec is None:
            continue
        r.keys(spec, file, _FLOW_KEYS, f"flow {name!r}")
        intents: tuple[str, ...] = ()
        condition = None
        if (start := spec.get("start")) is not None and (
                s := r.mapping(start, file, spec.key_lines["start"], "'start'")):
            r.keys(s, file, ("intents", "condition"), "'start'")
            intents = r.strings(s, "intents", file)
            if s.get("condition") is not None:
                try:
                    condition = parse_condition(str(s["condition"]))
                except ValueError as exc:
                    r.problem(file, s.key_lines["condition"], str(exc))
        raw_steps = spec.get("steps")
        steps: list[Step] = []
        if not isinstance(raw_steps, _Seq):
            r.problem(file, spec.key_lines.get("steps", line),
                      f"flow {name!r} needs 'steps' (a list)")
        else:
            for raw, sline in zip(raw_steps, raw_steps.item_lines, strict=True):
                if (step := _step(r, raw, file, sline, name)) is not None:
                    steps.append(step)
        out[name] = Flow(name=name, steps=tuple(steps),
                         title=str(spec.get("title") or ""),
                         description=str(spec.get("description") or ""),
                         start_intents=intents, start_condition=condition,
                         persisted_slots=r.strings(spec, "persisted_slots", file),
                         source=Source(file, line))
    return out


# --------------------------------------------------------------------------- cross-checks


#: Responses said unasked (agents/dialogue/proactive.py): their fields come from the data
#: of a backend's callback or a business event, not only from slots.
NOTICE_RESPONSE_PREFIXES = ("utter_callback_", "utter_event_")


def _template_fields(text: str) -> set[str]:
    try:
        return {name.split(".")[0].split("[")[0]
                for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError:
        return set()


def _cross_check(r: _Reader, p: _Parts) -> None:
    responses, slots, flows, intents = p.responses, p.slots, p.flows, p.intents
    problem = r.problem

    def need_response(name: str | None, src: Source, what: str) -> None:
        if "responses.yml" in p.unreadable:
            return  # its syntax error is reported; every name would look unknown
        if name is not None and name not in responses:
            problem(src.file, src.line, f"{what} uses the response {name!r}, which "
                                        f"responses.yml does not define")

    for flow in flows.values():
        is_pattern = flow.name in p.pattern_flows
        known_names = set(slots) | (CONTEXT_NAMES if is_pattern else set())
        for intent in flow.start_intents:
            if intent not in intents:
                problem(flow.source.file, flow.source.line,
                        f"flow {flow.name!r} starts on intent {intent!r}, which intents.yml "
                        f"does not define")
        if flow.start_condition is not None:
            for n in flow.start_condition.names() - known_names:
                problem(flow.source.file, flow.source.line,
                        f"flow {flow.name!r}: its start condition uses {n!r}, not a slot")
        ids = {s.id for s in flow.steps if s.id}
        for step in flow.steps:
            src, where = step.source, f"flow {flow.name!r}"
            if isinstance(step, CollectStep):
                if step.slot not in slots:
                    problem(src.file, src.line, f"{where} collects the unknown slot "
                                                f"{step.slot!r} (slots.yml does not define it)")
                if step.required or step.ask_before_filling:
                    need_response(step.ask, src, f"{where} (collect {step.slot})")
                need_response(step.invalid, src, f"{where} (collect {step.slot})")
                if step.on_failure and step.on_failure not in flows:
                    problem(src.file, src.line, f"{where}: on_failure names the unknown flow "
                                                f"{step.on_failure!r}")
            elif isinstance(step, ActionStep):
                action = p.actions.get(step.action)
                if action is None:
                    problem(src.file, src.line, f"{where} calls the action {step.action!r}, "
                                                f"which actions.yml does not declare")
                for slot in (*step.inputs, *step.outputs.values()):
                    if slot not in slots:
                        problem(src.file, src.line, f"{where}: action {step.action!r} uses "
                                                    f"the unknown slot {slot!r}")
                if action is not None:
                    for out in step.outputs:
                        if out not in action.outputs:
                            problem(src.file, src.line,
                                    f"{where}: action {step.action!r} declares no output "
                                    f"{out!r} (it has: {', '.join(action.outputs) or 'none'})")
                need_response(step.on_error, src, f"{where} (action {step.action})")
                need_response(step.on_unavailable, src, f"{where} (action {step.action})")
                need_response(step.on_unknown, src, f"{where} (action {step.action})")
            elif isinstance(step, SetSlotsStep):
                for slot in step.values:
                    if slot not in slots:
                        problem(src.file, src.line, f"{where} sets the unknown slot {slot!r}")
            elif isinstance(step, BranchStep):
                for condition, target in step.cases:
                    if target != "end" and target not in ids:
                        problem(src.file, src.line, f"{where}: branch goes to {target!r}, "
                                                    f"which is no step id of this flow (or "
                                                    f"'end')")
                    if condition is not None:
                        for n in sorted(condition.names() - known_names):
                            problem(src.file, src.line, f"{where}: the condition "
                                                        f"{condition.text!r} uses {n!r}, "
                                                        f"which is not a slot")
            elif isinstance(step, (LinkStep, CallStep)):
                if step.flow not in flows:
                    kind = "links" if isinstance(step, LinkStep) else "calls"
                    problem(src.file, src.line, f"{where} {kind} to the unknown flow "
                                                f"{step.flow!r}")
            elif isinstance(step, SayStep):
                need_response(step.response, src, where)

    set_anywhere: set[str] = set()
    for flow in flows.values():
        set_anywhere |= flow.set_slots()
    pattern_responses = _pattern_responses(p) | p.pattern_responses
    for response in responses.values():
        for variant in response.variants:
            for name in sorted(_template_fields(variant.text)):
                src = variant.source
                if name not in slots:
                    if response.name in pattern_responses and name in CONTEXT_NAMES:
                        continue
                    if response.name.startswith(NOTICE_RESPONSE_PREFIXES):
                        continue  # filled from a callback's or business event's data
                    problem(src.file, src.line, f"response {response.name!r} uses {{{name}}}, "
                                                f"which is not a slot")
                elif name not in set_anywhere:
                    problem(src.file, src.line, f"response {response.name!r} uses the slot "
                                                f"{name!r}, which no flow sets (no collect, "
                                                f"set_slots or action output)")

    for name, flow in flows.items():
        for intent in flow.start_intents:
            other = next((f for f in flows.values() if f is not flow
                          and intent in f.start_intents), None)
            if other is not None and name < other.name:
                problem(flow.source.file, flow.source.line,
                        f"intent {intent!r} starts both flow {name!r} and {other.name!r}")

    s = p.settings
    defaults = BotSettings()
    named_intents = [*s.knowledge.intents, *s.chitchat]
    for mine, default in ((s.cancel_intents, defaults.cancel_intents),
                          (s.affirm_intents, defaults.affirm_intents),
                          (s.deny_intents, defaults.deny_intents)):
        if mine != default:  # the defaults are fine to leave undefined
            named_intents.extend(mine)
    for named in named_intents:
        if named not in intents:
            problem(s.source.file, s.source.line,
                    f"bot.yml names the intent {named!r}, which intents.yml does not define "
                    f"(it will never be recognised)", "warning")
    for intent_name, reply in s.chitchat.items():
        need_response(reply or None, s.source, f"chitchat for {intent_name!r}")

    entity_names = {e for slot in slots.values() for e in slot.entities}
    for intent_spec in intents.values():
        for ex in intent_spec.examples:
            for span in ex.entities:
                if span.entity not in entity_names:
                    problem(ex.source.file, ex.source.line,
                            f"intent {intent_spec.name!r}: the annotation "
                            f"[{ex.text[span.start:span.end]}]({span.entity}) names the entity "
                            f"{span.entity!r}, which no slot uses (add it to a slot's "
                            f"'entities' in slots.yml, or fix the name)")
    _check_calibration(r, p)


def _pattern_responses(p: _Parts) -> set[str]:
    names: set[str] = set()
    for name in p.pattern_flows:
        flow = p.flows.get(name)
        for step in flow.steps if flow else ():
            if isinstance(step, SayStep):
                names.add(step.response)
            elif isinstance(step, CollectStep):
                names.add(step.ask)
    return names | {n for n in p.responses if n.startswith("utter_") and
                    any(n == f"utter_{f.removeprefix('pattern_')}" for f in p.pattern_flows)}


def _check_calibration(r: _Reader, p: _Parts) -> None:
    """Warn about intents too small for the held-out calibration split of NLU training."""
    fraction = p.settings.nlu.validation_fraction
    held_out = 0
    for intent in p.intents.values():
        n = len(intent.examples)
        k = round(n * fraction) if n >= 3 else 0
        held_out += k
        if n and k == 0:
            r.problem(intent.source.file, intent.source.line,
                      f"intent {intent.name!r} has {n} example(s): none can be held out to "
                      f"calibrate the out-of-scope threshold, so all train the model and the "
                      f"threshold is fitted on the other intents; write at least "
                      f"{_needed(fraction)} examples", "warning")
    if p.intents and held_out < MIN_CALIBRATION_EXAMPLES:
        first = next(iter(p.intents.values())).source
        r.problem(first.file, first.line,
                  f"only {held_out} example(s) can be held out for calibration (at least "
                  f"{MIN_CALIBRATION_EXAMPLES} are needed): the NLU will keep the default "
                  f"confidence temperature and an out-of-scope threshold of 0.0, so only "
                  f"examples of the {p.settings.nlu.oos_intent!r} intent mark a message out of "
                  f"scope; add examples", "warning")


def _needed(fraction: float) -> int:
    n = 3
    while round(n * fraction) == 0 and n < 1000:
        n += 1
    return n


# --------------------------------------------------------------------------- entry points


def _hash_folder(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            digest.update(rel.as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def _read_parts(folder: Path, problems: list[Problem]) -> _Parts:
    r = _Reader(folder, problems)
    parts = _Parts()
    patterns = _Reader(folder, [])
    pattern_data = patterns.read(PATTERNS_FILE, "patterns.yml")
    if patterns.problems or pattern_data is None:  # a defect of the package, not the bot
        raise DialogueError(f"the built-in patterns.yml is broken: {patterns.problems}")
    pattern_flows = _flows(patterns, _sub(pattern_data, "flows"), "patterns.yml")
    pattern_responses = _responses(patterns, _sub(pattern_data, "responses"), "patterns.yml")

    readers: dict[str, Callable[[_Reader, _Map, str], Any]] = {
        "intents.yml": _intents, "slots.yml": _slots, "responses.yml": _responses,
        "flows.yml": _flows, "actions.yml": _actions,
    }
    required = ("bot.yml", "intents.yml", "flows.yml", "responses.yml")
    loaded: dict[str, Any] = {}
    unreadable: set[str] = set()
    for name in BOT_FILES:
        path = folder / name
        if not path.is_file():
            alt = path.with_suffix(".yaml")
            if alt.is_file():
                path = alt
            elif name in required:
                problems.append(Problem(name, 0, f"missing: a bot folder needs {name}"))
                continue
            else:
                continue
        data = r.read(path, path.name)
        if data is None:
            unreadable.add(name)
            continue
        if name == "bot.yml":
            parts.settings = _settings(r, data, path.name)
        else:
            loaded[name] = readers[name](r, data, path.name)
    known = set(BOT_FILES) | {n.replace(".yml", ".yaml") for n in BOT_FILES} | {
        "integrations.yml"}  # read by the worker's integrations (agents/integrations/)
    for path in sorted(folder.glob("*.y*ml")):
        if path.name not in known:
            problems.append(Problem(path.name, 1, f"unknown file {path.name!r}: it is not read "
                                                  f"(a bot folder has {', '.join(BOT_FILES)})",
                                    "warning"))
    parts.intents = loaded.get("intents.yml", {})
    parts.slots = loaded.get("slots.yml", {})
    parts.actions = loaded.get("actions.yml", {})
    parts.responses = {**pattern_responses, **loaded.get("responses.yml", {})}
    parts.flows = {**pattern_flows, **loaded.get("flows.yml", {})}
    parts.pattern_flows = frozenset(pattern_flows)
    parts.pattern_responses = frozenset(pattern_responses)
    parts.unreadable = frozenset(unreadable)
    _cross_check(r, parts)
    return parts


def _sub(data: _Map, key: str) -> _Map:
    out = _Map()
    out.line, out.key_lines = data.line, {}
    if key in data:
        out[key] = data[key]
        out.key_lines[key] = data.key_lines[key]
    return out


def _knowledge_files(folder: Path) -> tuple[Path, ...]:
    root = folder / "knowledge"
    if not root.is_dir():
        return ()
    return tuple(sorted(p for p in root.rglob("*")
                        if p.is_file() and p.suffix.lower() in KNOWLEDGE_SUFFIXES))


def validate_bot(folder: Path) -> list[Problem]:
    """Every problem of the bot in ``folder`` (errors and warnings), in file order."""
    folder = Path(folder)
    if not folder.is_dir():
        return [Problem(str(folder), 0, "not a folder")]
    problems: list[Problem] = []
    _read_parts(folder, problems)
    return _sorted(problems)


def _sorted(problems: list[Problem]) -> list[Problem]:
    order = {name: i for i, name in enumerate(BOT_FILES)}
    return sorted(problems, key=lambda p: (order.get(p.file, 99), p.file, p.line))


def load_bot(folder: Path) -> Bot:
    """The bot in ``folder``; :class:`BotFolderError` lists every problem when any is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BotFolderError(folder, [Problem(str(folder), 0, "not a folder")])
    problems: list[Problem] = []
    parts = _read_parts(folder, problems)
    problems = _sorted(problems)
    if any(p.severity == "error" for p in problems):
        raise BotFolderError(folder, problems)
    return Bot(folder=folder, settings=parts.settings, intents=parts.intents, slots=parts.slots,
               responses=parts.responses, flows=parts.flows, actions=parts.actions,
               knowledge_files=_knowledge_files(folder), version=_hash_folder(folder),
               warnings=tuple(str(p) for p in problems))

