"""Conversation test cases (``parley test``): Rasa-style end-to-end steps, run over any
:class:`Conversation`.

A file holds ``test_cases:``, each a ``test_case:`` name and its ``steps:``::

    test_cases:
      - test_case: transfer to Anna
        steps:
          - user: send 50 euros to Anna
          - utter: utter_ask_confirm_transfer
          - slot_was_set: {amount: {value: 50, currency: EUR}, recipient: Anna}
          - active_flow: transfer_money
          - requested_slot: confirm_transfer
          - user: yes
          - bot: "I would now send 50 EUR to Anna."
          - slot_was_not_set: [order_id]

How steps are checked (the choices a builder needs to know):

- ``user`` sends the text and takes the bot's replies to it (all of them: a turn may
  say several things). The state assertions after it read the conversation's state at
  the end of that turn.
- ``bot`` (the reply's text) and ``utter`` (the response's name) match the turn's
  replies *in order*: each takes the next reply not yet matched. Replies left after
  the last asserted one are allowed, so a case may check only what matters to it.
- ``slot_was_set: {slot: value}`` compares values: a mapping matches as a subset
  (``{currency: EUR}`` matches ``{value: 50, currency: EUR}``), numbers numerically
  (``50`` matches ``50.0``, ``"50"`` and the amount ``{value: 50, currency: EUR}``), text
  exactly; ``slot_was_set: [slot]``
  only asks that the slot has a value. ``slot_was_not_set: [slot]`` asks that it has none.
- ``active_flow`` / ``requested_slot``: a name, or ``null`` for none.

The first failing step ends its case (later steps would read a conversation that has
gone elsewhere). A file that is not in this format is refused whole, with the file
and line of each problem, before anything runs.

Two conversations implement :class:`Conversation`: an in-process one (NLU model and
dialogue manager, no infrastructure; :mod:`agents.dialogue.testing_cli` builds it) and
:class:`WebSocketConversation` (a real running stack through ``/ws``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import websockets
import websockets.exceptions
import yaml

from kernel.errors import ParleyError

__all__ = [
    "NO_STATE",
    "STEP_KINDS",
    "CaseFileError",
    "CaseReport",
    "Conversation",
    "Failure",
    "Observation",
    "Snapshot",
    "Step",
    "StubbedAction",
    "TestCase",
    "WebSocketConversation",
    "dev_token",
    "load_cases",
    "parse_cases",
    "run_case",
    "run_cases",
    "value_matches",
]

StepKind = Literal["user", "bot", "utter", "slot_was_set", "slot_was_not_set", "active_flow",
                   "requested_slot"]
STEP_KINDS: tuple[str, ...] = ("user", "bot", "utter", "slot_was_set", "slot_was_not_set",
                               "active_flow", "requested_slot")
ANY_VALUE: Any = object()
"""The expected value of ``slot_was_set: [slot]``: any value but none."""


class CaseFileError(ParleyError, ValueError):
    """A test case file that cannot be read; ``problems`` are ``file:line: what`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True, slots=True)
class Step:
    """One step; ``value`` is the text, name, ``None`` or, for slot steps, a mapping of
    slot name to expected value (:data:`ANY_VALUE` for "set to anything")."""

    kind: StepKind
    value: Any
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def describe(self) -> str:
        if self.kind == "slot_was_set":
            shown = {k: ("<any>" if v is ANY_VALUE else v) for k, v in self.value.items()}
            return f"slot_was_set: {json.dumps(shown, default=str)}"
        return f"{self.kind}: {json.dumps(self.value, default=str)}"


@dataclass(frozen=True, slots=True)
class TestCase:
    __test__ = False  # not a pytest class

    name: str
    steps: tuple[Step, ...]
    file: str
    line: int
    actions: Mapping[str, StubbedAction] = field(default_factory=dict)
    """In process, what each action answers (``actions:`` in the case); against a running
    stack the real backends answer and this is ignored."""


@dataclass(frozen=True, slots=True)
class StubbedAction:
    """A case's stand-in result for an action: ``ok`` with ``outputs``, or a failure of
    ``kind`` (``failed``, ``unavailable``, ``timeout``, ...)."""

    ok: bool = True
    outputs: Mapping[str, Any] = field(default_factory=dict)
    kind: str = ""


def load_cases(paths: Sequence[Path]) -> list[TestCase]:
    """Every case of every file; all files' problems are reported together."""
    cases: list[TestCase] = []
    problems: list[str] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
            continue
        try:
            cases.extend(parse_cases(text, str(path)))
        except CaseFileError as exc:
            problems.extend(exc.problems)
    names: dict[str, str] = {}
    for case in cases:
        where = f"{case.file}:{case.line}"
        if case.name in names:
            problems.append(f"{where}: the test case {case.name!r} is already defined at "
                            f"{names[case.name]}")
        names.setdefault(case.name, where)
    if problems:
        raise CaseFileError(problems)
    return cases


def parse_cases(text: str, file: str = "<cases>") -> list[TestCase]:
    """Parse one file's text; :class:`CaseFileError` lists every problem with its line."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise CaseFileError([f"{file}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})"]
                            ) from None
    try:
        return _Reader(loader, file).cases(root)
    finally:
        loader.dispose()


class _Reader:
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader, self.file = loader, file
        self.problems: list[str] = []

    def problem(self, node: yaml.Node | None, what: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(f"{self.file}:{line}: {what}")

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def cases(self, root: yaml.Node | None) -> list[TestCase]:
        out: list[TestCase] = []
        if not isinstance(root, yaml.MappingNode) or "test_cases" not in _keys(root):
            self.problem(root, "expected a mapping with `test_cases:` (a list of test cases)")
        else:
            items = _get(root, "test_cases")
            if not isinstance(items, yaml.SequenceNode):
                self.problem(items, "`test_cases` must be a list of `- test_case: NAME`")
            else:
                for item in items.value:
                    case = self.case(item)
                    if case is not None:
                        out.append(case)
        if self.problems:
            raise CaseFileError(self.problems)
        return out

    def case(self, node: yaml.Node) -> TestCase | None:
        if not isinstance(node, yaml.MappingNode) or "test_case" not in _keys(node):
            self.problem(node, "expected `- test_case: NAME` with `steps:`")
            return None
        unknown = sorted(set(_keys(node)) - {"test_case", "steps", "metadata", "actions"})
        if unknown:
            self.problem(node, f"unknown key(s) {', '.join(unknown)} in a test case "
                               "(expected test_case, steps, actions)")
        name_node = _get(node, "test_case")
        name = self.value(name_node) if name_node is not None else None
        if not isinstance(name, str) or not name.strip():
            self.problem(name_node, "`test_case` must be a non-empty name")
            name = "?"
        steps_node = _get(node, "steps")
        if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
            self.problem(steps_node or node, f"test case {name!r}: `steps` must be a non-empty "
                                             "list")
            return None
        steps = [self.step(s) for s in steps_node.value]
        kept = tuple(s for s in steps if s is not None)
        if kept and not any(s.kind == "user" for s in kept):
            self.problem(node, f"test case {name!r} has no `user` step")
        actions_node = _get(node, "actions")
        actions = self.actions(actions_node) if actions_node is not None else {}
        return TestCase(name, kept, self.file, node.start_mark.line + 1, actions)

    def actions(self, node: yaml.Node) -> dict[str, StubbedAction]:
        """``actions: {NAME: {ok: true, outputs: {...}} | {ok: false, kind: unavailable}}``."""
        value = self.value(node)
        if not isinstance(value, dict):
            self.problem(node, "`actions` must map action names to {ok, outputs, kind}")
            return {}
        out: dict[str, StubbedAction] = {}
        for name, spec in value.items():
            if not isinstance(spec, dict) or set(spec) - {"ok", "outputs", "kind"} or \
                    not isinstance(spec.get("ok", True), bool) or \
                    not isinstance(spec.get("outputs", {}), dict):
                self.problem(node, f"action {name!r}: expected {{ok: true|false, outputs: "
                                   f"{{...}}, kind: failed|unavailable|timeout}}")
                continue
            ok = spec.get("ok", True)
            out[str(name)] = StubbedAction(ok, spec.get("outputs", {}),
                                           "" if ok else str(spec.get("kind", "failed")))
        return out

    def step(self, node: yaml.Node) -> Step | None:
        if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
            self.problem(node, f"a step is one `KIND: VALUE` pair, KIND one of "
                               f"{', '.join(STEP_KINDS)}")
            return None
        key_node, value_node = node.value[0]
        kind = self.value(key_node)
        line = node.start_mark.line + 1
        if kind not in STEP_KINDS:
            self.problem(node, f"unknown step {kind!r} (expected one of {', '.join(STEP_KINDS)})")
            return None
        value = self.value(value_node)
        if kind in ("user", "bot", "utter"):
            if isinstance(value, bool):
                self.problem(node, f"`{kind}` needs a text: YAML reads {value_node.value!r} "
                                   f"as {value}; write it in quotes")
                return None
            if not isinstance(value, (str, int, float)) or not str(value).strip():
                self.problem(node, f"`{kind}` needs a non-empty text")
                return None
            return Step(kind, str(value), self.file, line)
        if kind in ("active_flow", "requested_slot"):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                self.problem(node, f"`{kind}` needs a name, or null for none")
                return None
            return Step(kind, value, self.file, line)
        if kind == "slot_was_set":
            expected = self.slot_values(node, value)
            return None if expected is None else Step(kind, expected, self.file, line)
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n for n in names):
            self.problem(node, "`slot_was_not_set` needs a slot name or a list of them")
            return None
        return Step("slot_was_not_set", tuple(names), self.file, line)

    def slot_values(self, node: yaml.Node, value: Any) -> dict[str, Any] | None:
        """``{slot: value}``, ``[slot, ...]`` or Rasa's ``[{slot: value}, slot]``."""
        expected: dict[str, Any] = {}
        if isinstance(value, dict) and value:
            items: list[Any] = [value]
        elif isinstance(value, list) and value:
            items = value
        elif isinstance(value, str) and value:
            items = [value]
        else:
            items = []
        for item in items:
            if isinstance(item, str) and item:
                expected[item] = ANY_VALUE
            elif isinstance(item, dict) and item and all(isinstance(k, str) for k in item):
                expected.update(item)
            else:
                items = []
                break
        if not items:
            self.problem(node, "`slot_was_set` needs {slot: value, ...} or a list of slot names")
            return None
        return expected


def _keys(node: yaml.MappingNode) -> list[Any]:
    return [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]


def _get(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


# --------------------------------------------------------------------------- conversations


@dataclass(frozen=True, slots=True)
class Observation:
    """One bot reply: its text, and the response it came from when the channel says so."""

    text: str
    response: str | None = None
    quick_replies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The conversation's state at the end of a turn, as far as a test can see it."""

    slots: Mapping[str, Any] = field(default_factory=dict)
    active_flow: str | None = None
    requested_slot: str | None = None


class Conversation(Protocol):
    """A fresh conversation with the bot under test."""

    async def send(self, text: str) -> list[Observation]:
        """Send one user message and return the bot's replies to it."""
        ...

    def snapshot(self) -> Snapshot | None:
        """The state after the last turn; ``None`` when this conversation cannot see it."""
        ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- matching


def value_matches(expected: Any, actual: Any) -> bool:
    """Does a slot's ``actual`` value satisfy a test's ``expected`` one (module docstring)?"""
    if expected is ANY_VALUE:
        return actual is not None
    if expected is None:
        return actual is None
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and value_matches(value, actual[key]) for key, value in expected.items())
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and expected == actual
    if isinstance(expected, (int, float)):
        if isinstance(actual, Mapping):  # an amount: its value
            actual = actual.get("value")
        number = _number(actual)
        return number is not None and number == _number(expected)
    if isinstance(expected, list):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(value_matches(e, a) for e, a in zip(expected, actual, strict=True)))
    return isinstance(actual, str) and str(expected) == actual


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or isinstance(value, Mapping):
        return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


# --------------------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class Failure:
    """The first step of a case that did not hold."""

    test_case: str
    step: int  # 1-based index in the case's steps
    where: str  # file:line of the step
    expected: str
    actual: str

    def as_json(self) -> dict[str, Any]:
        return {"test_case": self.test_case, "step": self.step, "where": self.where,
                "expected": self.expected, "actual": self.actual}


@dataclass(frozen=True, slots=True)
class CaseReport:
    """The outcome of a run: the names of the cases that passed, and the failures."""

    passed: tuple[str, ...]
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        return {"passed": len(self.passed), "failed": len(self.failures),
                "failures": [f.as_json() for f in self.failures]}

    def text(self) -> str:
        lines = [f"PASSED  {name}" for name in self.passed]
        for f in self.failures:
            lines += [f"FAILED  {f.test_case}", f"  step {f.step} ({f.where})",
                      f"    expected: {f.expected}", f"    actual:   {f.actual}"]
        lines.append(f"{len(self.passed)} passed, {len(self.failures)} failed")
        return "\n".join(lines)


class _Turn:
    """The replies of the latest user message, and how many a step has matched."""

    def __init__(self, replies: list[Observation]) -> None:
        self.replies, self.matched = replies, 0

    def remaining(self) -> list[Observation]:
        return self.replies[self.matched:]


def _show_replies(replies: Sequence[Observation], attr: str) -> str:
    if not replies:
        return "no more replies to the last user message"
    return json.dumps([getattr(r, attr) for r in replies], ensure_ascii=False)


async def run_case(case: TestCase, conversation: Conversation) -> Failure | None:
    """Run one case on a fresh conversation; the first failing step, or None."""
    turn = _Turn([])
    for index, step in enumerate(case.steps, start=1):
        def fail(actual: str, *, _index: int = index, _step: Step = step) -> Failure:
            return Failure(case.name, _index, _step.where, _step.describe(), actual)

        if step.kind == "user":
            turn = _Turn(await conversation.send(step.value))
            continue
        if step.kind in ("bot", "utter"):
            remaining = turn.remaining()
            attr = "text" if step.kind == "bot" else "response"
            if not remaining:
                return fail(_show_replies(remaining, attr))
            reply = remaining[0]
            if step.kind == "utter" and reply.response is None:
                return fail("this conversation does not say which response a reply came from "
                            f"(reply text: {reply.text!r})")
            if getattr(reply, attr) != step.value:
                return fail(_show_replies(remaining, attr))
            turn.matched += 1
            continue
        snapshot = conversation.snapshot()
        if snapshot is None:
            return fail(NO_STATE)
        if step.kind == "slot_was_set":
            wrong = {slot: snapshot.slots.get(slot) for slot, want in step.value.items()
                     if not value_matches(want, snapshot.slots.get(slot))}
            if wrong:
                return fail(f"slots: {json.dumps(wrong, default=str, ensure_ascii=False)}")
        elif step.kind == "slot_was_not_set":
            filled = {slot: snapshot.slots[slot] for slot in step.value
                      if snapshot.slots.get(slot) is not None}
            if filled:
                return fail(f"slots: {json.dumps(filled, default=str, ensure_ascii=False)}")
        elif step.kind == "active_flow":
            if snapshot.active_flow != step.value:
                return fail(f"active_flow: {json.dumps(snapshot.active_flow)}")
        elif snapshot.requested_slot != step.value:
            return fail(f"requested_slot: {json.dumps(snapshot.requested_slot)}")
    return None


#: A slot or flow step's failure when the replies carried no state.
NO_STATE = ("the replies carry no dialogue state: against a running stack it needs a token "
            "with the bot_tester role (`parley token --role bot_tester`, or --dev-token)")


class ConversationFactory(Protocol):
    async def __call__(self, case: TestCase) -> Conversation: ...


async def run_cases(cases: Sequence[TestCase], new_conversation: ConversationFactory
                    ) -> CaseReport:
    """Run each case on its own new conversation, one after the other."""
    passed: list[str] = []
    failures: list[Failure] = []
    for case in cases:
        conversation = await new_conversation(case)
        try:
            failure = await run_case(case, conversation)
        except (TimeoutError, OSError, ParleyError,
                websockets.exceptions.WebSocketException) as exc:
            failure = Failure(case.name, 0, f"{case.file}:{case.line}", "the case to run",
                              f"{type(exc).__name__}: {exc}")
        finally:
            await conversation.close()
        if failure is None:
            passed.append(case.name)
        else:
            failures.append(failure)
    return CaseReport(tuple(passed), tuple(failures))


# --------------------------------------------------------------------------- WebSocket


def _refusal(exc: websockets.exceptions.InvalidStatus) -> str:
    """``HTTP 401: token expired``: a refused handshake and the gateway's reason."""
    response = exc.response
    if response.status_code in (401, 403):
        return f"HTTP {response.status_code}: {response.body.decode(errors='replace').strip()}"
    return f"HTTP {response.status_code}"


async def dev_token(url: str, *, timeout_s: float = 10.0) -> str:
    """A bot tester's token from the gateway at ``url`` (``ws://HOST:PORT/ws``), in
    development mode: ``GET /dev/token?role=bot_tester`` on the same host and port.
    :class:`ConnectionError` says why there is none."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    address = urlunsplit((scheme, parts.netloc, "/dev/token", "role=bot_tester", ""))
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(address)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot get a development token from {address}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if response.status_code == 404:
        raise ConnectionError(f"{address} answered 404: the gateway is not in development "
                              "mode; pass --token (`parley token --role bot_tester`)")
    try:
        token = response.json().get("token") if response.status_code == 200 else None
    except (ValueError, AttributeError):  # not JSON, or not an object
        token = None
    if not isinstance(token, str):
        raise ConnectionError(f"{address} answered HTTP {response.status_code}: "
                              f"{response.text.strip()[:200]}")
    return token


def _ws_url(url: str, query: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/ws"
    joined = "&".join(q for q in (parts.query, urlencode(query)) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, joined, ""))


def _observations(frame: Mapping[str, Any]) -> list[Observation]:
    """A reply frame as the replies a test sees: each utterance it lists (a bot tester's
    frame), else the frame itself; the quick replies go with the last."""
    quick = tuple(frame.get("quick_replies") or ())
    listed = frame.get("utterances")
    if isinstance(listed, list) and listed and all(isinstance(u, Mapping) for u in listed):
        return [Observation(str(u.get("text", "")), u.get("response"),
                            quick if i == len(listed) - 1 else ())
                for i, u in enumerate(listed)]
    return [Observation(str(frame.get("text", "")), frame.get("response"), quick)]


class WebSocketConversation:
    """A conversation with a running stack through its ``/ws`` protocol (docs/protocol.md).

    A turn's replies are the ``reply`` frames whose ``in_reply_to`` is the message's
    ``client_msg_id``. The turn ends at a reply frame marked ``"turn_end": true`` when the
    gateway sends that mark, else when no further reply came for ``quiet_s`` after the
    last one (or ``timeout_s`` after sending, with no reply at all).

    The fields a reply frame needs for every step kind: ``response`` (the response name,
    sent by every gateway) for ``utter``, and, on the turn's last reply when the
    connection asked for it with ``debug=1`` and its credentials hold the ``bot_tester``
    role (streams/turn_state.py), ``state: {"slots", "active_flow", "requested_slot"}``.
    Without them those steps fail saying what is missing (:data:`NO_STATE`). A reply
    that joins several utterances names only the last response; a bot tester's also
    lists them (``utterances: [{"response", "text"}]``), and each counts as a reply, as
    in process.
    """

    def __init__(self, ws: Any, *, timeout_s: float = 10.0, quiet_s: float = 0.75) -> None:
        self._ws = ws
        self._timeout_s, self._quiet_s = timeout_s, quiet_s
        self._snapshot: Snapshot | None = None

    @classmethod
    async def open(cls, url: str, *, token: str | None = None, api_key: str | None = None,
                   timeout_s: float = 10.0, quiet_s: float = 0.75) -> WebSocketConversation:
        """Connect in a new conversation and wait for ``welcome``; a URL without a path
        gets ``/ws``. The gateway wants credentials (docs/protocol.md): a user's
        ``token``, or a tenant ``api_key`` speaking for a new user. :class:`ConnectionError`
        says why it failed."""
        query = {"conversation": f"test-{uuid.uuid4().hex[:16]}",
                 "user": f"tester-{uuid.uuid4().hex[:12]}", "debug": "1"}
        if token:
            query["token"] = token
        full = _ws_url(url, query)
        headers = {"X-Parley-Key": api_key} if api_key else None
        try:
            ws = await asyncio.wait_for(websockets.connect(full, additional_headers=headers),
                                        timeout_s)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            reason = _refusal(exc) if isinstance(
                exc, websockets.exceptions.InvalidStatus) else f"{type(exc).__name__}: {exc}"
            raise ConnectionError(f"cannot open a conversation at {url} ({reason}); "
                                  "expected ws://HOST:PORT/ws") from exc
        conversation = cls(ws, timeout_s=timeout_s, quiet_s=quiet_s)
        frame = await conversation._receive(timeout_s)
        if frame.get("type") != "welcome":
            await ws.close()
            raise ConnectionError(f"expected a welcome frame from {url}, got {frame}")
        return conversation

    async def _receive(self, wait_s: float) -> dict[str, Any]:
        async with asyncio.timeout(wait_s):
            raw = await self._ws.recv()
        frame = json.loads(raw)
        if not isinstance(frame, dict):
            raise ConnectionError(f"the gateway sent a frame that is not an object: {raw!r}")
        return frame

    async def send(self, text: str) -> list[Observation]:
        msg_id = uuid.uuid4().hex
        await self._ws.send(json.dumps({"type": "message", "text": text, "client_msg_id": msg_id}))
        replies: list[Observation] = []
        self._snapshot = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while True:
            wait = deadline - loop.time() if not replies else self._quiet_s
            if wait <= 0:
                break
            try:
                frame = await self._receive(wait)
            except TimeoutError:
                break
            kind = frame.get("type")
            if kind == "error" and frame.get("client_msg_id") == msg_id:
                raise ConnectionError(f"the gateway refused the message: {frame.get('code')} "
                                      f"{frame.get('message')}")
            if kind != "reply" or frame.get("in_reply_to") != msg_id:
                continue
            replies.extend(_observations(frame))
            state = frame.get("state")
            if isinstance(state, Mapping):
                self._snapshot = Snapshot(dict(state.get("slots") or {}),
                                          state.get("active_flow"), state.get("requested_slot"))
            if frame.get("turn_end") is True:
                break
        return replies

    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    async def close(self) -> None:
        await self._ws.close()
