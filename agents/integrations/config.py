"""``integrations.yml``: the HTTP backends of a bot and the actions that call them.

A bot folder's actions.yml names the actions its flows call; integrations.yml says how
each one is carried out: which backend, which method and path, which typed inputs go in
and which typed outputs come back out of the JSON answer. Backends carry their base URL,
their OAuth2 client-credentials grant, timeouts, retries and breaker. Secrets never sit
in the file: ``${CRM_CLIENT_SECRET}`` is read from the worker's environment (``${NAME:-
default}`` gives a default), and a missing one is a start-up error naming its line::

    backends:
      crm:
        base_url: ${CRM_URL:-http://127.0.0.1:8090}
        auth:
          type: oauth2_client_credentials
          token_url: /oauth/token
          client_id: ${CRM_CLIENT_ID:-parley}
          client_secret: ${CRM_CLIENT_SECRET}
          scope: crm.read crm.write
        timeout_s: 0.4          # one HTTP attempt
        retries: 1              # more attempts, idempotent calls only
        deadline_s: 0.9         # a whole call, retries included (the action's timeout)
        breaker: {failures: 5, reset_s: 10}
    actions:
      order_status:
        backend: crm
        method: GET
        path: /orders/{order_id}
        inputs:
          order_id: {type: string, pattern: '^\\d{5,10}$'}
        outputs:
          order_status: {type: string, from: status}
          carrier: {type: string, from: carrier, required: false}

Every problem is reported at once as ``integrations.yml:LINE: message``
(:class:`~agents.integrations.errors.IntegrationConfigError`), with the same
line-keeping YAML reader as the rest of the bot folder (agents/dialogue/loader.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.dialogue.loader import Problem, _Map, _Reader
from agents.integrations.errors import IntegrationConfigError

__all__ = [
    "DERIVED_CONTEXTS",
    "FIELD_TYPES",
    "FILE_NAME",
    "BackendConfig",
    "FieldSpec",
    "HttpAction",
    "IntegrationsConfig",
    "OAuth2Config",
    "load_integrations",
    "read_integrations",
    "validate_integrations",
]

FILE_NAME = "integrations.yml"
FIELD_TYPES = ("string", "integer", "number", "boolean", "amount", "object", "list", "any")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Methods that may be retried without an idempotency key (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
#: What an input may take from the call (agents.actions.ActionContext's fields; a test
#: checks they agree: importing it here would load pydantic for `parley validate`).
CONTEXT_FIELDS = ("tenant_id", "conversation_id", "user_id", "channel", "bot_version",
                  "requested_at_ms")
#: Contexts made from the call's: ``callback_url``, where the backend POSTs the outcome of
#: asynchronous work, with Parley's signed token for this conversation (streams/proactive.py).
DERIVED_CONTEXTS = ("callback_url",)
_CONTEXTS = CONTEXT_FIELDS + DERIVED_CONTEXTS

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,99}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


@dataclass(frozen=True, slots=True)
class OAuth2Config:
    """An OAuth2 client-credentials grant (RFC 6749 §4.4)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str = ""
    refresh_margin_s: float = 30.0
    """A token is renewed this long before it expires (so no call presents a stale one)."""


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    base_url: str
    auth: OAuth2Config | None = None
    timeout_s: float = 2.0
    connect_timeout_s: float | None = None
    retries: int = 1
    deadline_s: float = 5.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    idempotency_header: str = "Idempotency-Key"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One input or output: its type, whether it must be there, where it comes from
    (an output: a dotted path in the JSON answer, ``from``; an input: the call's
    context, ``context``, instead of the flow's slots), where an input goes (``to``), and
    a regex for strings."""

    name: str
    type: str = "string"
    required: bool = True
    source: str = ""
    context: str = ""
    pattern: str = ""
    target: str = ""
    """An input's place in the JSON body or query, a dotted path (``ticket.comment.body``);
    default its name."""


@dataclass(frozen=True, slots=True)
class HttpAction:
    name: str
    backend: str
    method: str
    path: str
    inputs: tuple[FieldSpec, ...] = ()
    outputs: tuple[FieldSpec, ...] = ()
    idempotent: bool = False
    """A call that may be retried: GET, PUT, DELETE, or a write the backend deduplicates
    by its idempotency key (say ``idempotent: true``)."""
    timeout_s: float | None = None
    errors: Mapping[int, str] = field(default_factory=dict)
    description: str = ""
    line: int = 0

    @property
    def writes(self) -> bool:
        return self.method != "GET"


@dataclass(frozen=True, slots=True)
class IntegrationsConfig:
    backends: Mapping[str, BackendConfig]
    actions: Mapping[str, HttpAction]


def load_integrations(folder: Path, environ: Mapping[str, str] | None = None
                      ) -> IntegrationsConfig | None:
    """The bot folder's integrations.yml (None when it has none); raises
    :class:`IntegrationConfigError` listing every problem."""
    path = folder / FILE_NAME
    if not path.is_file():
        return None
    config, problems = read_integrations(path, environ)
    errors = [p for p in problems if p.severity == "error"]
    if errors or config is None:
        raise IntegrationConfigError(path, [str(p) for p in errors])
    return config


def validate_integrations(folder: Path, actions: Mapping[str, Any] | None = None,
                          environ: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the folder's integrations.yml (none without one); with the bot's
    actions.yml ``actions`` (name → ``ActionSpec``), also what does not fit them."""
    path = folder / FILE_NAME
    if not path.is_file():
        return []
    config, problems = read_integrations(path, environ)
    if config is None or actions is None:
        return problems
    for name, action in config.actions.items():
        spec = actions.get(name)
        if spec is None:
            problems.append(Problem(FILE_NAME, action.line, f"action {name!r} is not declared "
                                                            f"in actions.yml: no flow can call it",
                                    "warning"))
            continue
        given = set(spec.inputs)
        for field_spec in action.inputs:
            if field_spec.required and not field_spec.context and field_spec.name not in given:
                problems.append(Problem(FILE_NAME, action.line, f"action {name!r} needs input "
                                                                f"{field_spec.name!r}, which "
                                                                f"actions.yml does not give"))
        produced = {f.name for f in action.outputs}
        for output in spec.outputs:
            if output not in produced:
                problems.append(Problem(FILE_NAME, action.line, f"action {name!r}: actions.yml "
                                                                f"declares output {output!r}, "
                                                                f"which no output gives"))
    return problems


def read_integrations(path: Path, environ: Mapping[str, str] | None = None
                      ) -> tuple[IntegrationsConfig | None, list[Problem]]:
    """The file read, with every problem found (``parley validate`` prints them)."""
    problems: list[Problem] = []
    r = _Reader(path.parent, problems)
    data = r.read(path, path.name)
    if data is None:
        return None, problems
    env = os.environ if environ is None else environ
    file = path.name
    r.keys(data, file, ("backends", "actions"), file)
    backends: dict[str, BackendConfig] = {}
    section = r.mapping(data.get("backends", _empty()), file, data.key_lines.get("backends", 1),
                        "'backends'")
    for name, spec in (section or {}).items():
        line = section.key_lines[name] if section else 1
        if (m := r.mapping(spec, file, line, f"backend {name!r}")) is not None:
            backends[name] = _backend(r, env, file, name, m)
    actions: dict[str, HttpAction] = {}
    section = r.mapping(data.get("actions", _empty()), file, data.key_lines.get("actions", 1),
                        "'actions'")
    for name, spec in (section or {}).items():
        line = section.key_lines[name] if section else 1
        if not _NAME.fullmatch(name):
            r.problem(file, line, f"action name {name!r}: 1-100 characters of a-z, 0-9, "
                                  f"'_', '.' or '-', starting with a letter")
        elif (m := r.mapping(spec, file, line, f"action {name!r}")) is not None:
            if (action := _action(r, file, name, m, backends)) is not None:
                actions[name] = action
    return IntegrationsConfig(backends, actions), problems


def _empty() -> _Map:
    empty = _Map()
    empty.line, empty.key_lines = 1, {}
    return empty


def _line(m: _Map, key: str) -> int:
    return m.key_lines.get(key, m.line)


def _expand(r: _Reader, env: Mapping[str, str], file: str, line: int, value: str) -> str:
    """``${NAME}`` and ``${NAME:-default}`` replaced from the environment."""
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        r.problem(file, line, f"the environment variable {name} is not set (write "
                              f"${{{name}:-default}} for a default)")
        return ""
    return _ENV.sub(substitute, value)


def _positive(r: _Reader, m: _Map, key: str, file: str, default: float, what: str,
              *, zero: bool = False) -> float:
    value = r.typed(m, key, file, (int, float), default, what)
    if value < 0 or (value == 0 and not zero):
        r.problem(file, _line(m, key), f"{key!r} must be {what}, got {value}")
        return default
    return float(value)


def _backend(r: _Reader, env: Mapping[str, str], file: str, name: str,
             m: _Map) -> BackendConfig:
    r.keys(m, file, ("base_url", "auth", "timeout_s", "connect_timeout_s", "retries",
                     "deadline_s", "breaker", "idempotency_header", "headers"),
           f"backend {name!r}")
    text = lambda key, default="": _expand(  # noqa: E731 - a local shorthand
        r, env, file, _line(m, key), str(r.typed(m, key, file, str, default, "a text")))
    base_url = text("base_url")
    if not re.match(r"https?://[^/\s]+", base_url):
        r.problem(file, _line(m, "base_url"),
                  f"backend {name!r}: 'base_url' must be an http(s) URL, got {base_url!r}")
    auth = None
    if "auth" in m and (a := r.mapping(m["auth"], file, _line(m, "auth"), "'auth'")):
        r.keys(a, file, ("type", "token_url", "client_id", "client_secret", "scope",
                         "refresh_margin_s"), "auth")
        if a.get("type") != "oauth2_client_credentials":
            r.problem(file, _line(a, "type"),
                      "auth 'type' must be oauth2_client_credentials (the only grant a "
                      "service may use on its own behalf)")
        a_text = lambda key: _expand(  # noqa: E731
            r, env, file, _line(a, key), str(r.typed(a, key, file, str, "", "a text")))
        for key in ("token_url", "client_id", "client_secret"):
            if key not in a:
                r.problem(file, _line(m, "auth"), f"auth needs {key!r}")
        auth = OAuth2Config(a_text("token_url"), a_text("client_id"), a_text("client_secret"),
                            a_text("scope"),
                            _positive(r, a, "refresh_margin_s", file, 30.0, "seconds >= 0",
                                      zero=True))
    retries = r.typed(m, "retries", file, int, 1, "a whole number")
    if not 0 <= retries <= 10:
        r.problem(file, _line(m, "retries"), f"'retries' must be 0 to 10, got {retries}")
        retries = 1
    breaker = _empty()
    if "breaker" in m:
        breaker = r.mapping(m["breaker"], file, _line(m, "breaker"), "'breaker'") or breaker
        r.keys(breaker, file, ("failures", "reset_s"), "breaker")
    failures = r.typed(breaker, "failures", file, int, 5, "a whole number")
    if failures < 1:
        r.problem(file, _line(breaker, "failures"), "'failures' must be at least 1")
        failures = 5
    headers = m.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        r.problem(file, _line(m, "headers"), "'headers' must map header names to texts")
        headers = {}
    timeout_s = _positive(r, m, "timeout_s", file, 2.0, "seconds > 0")
    connect = m.get("connect_timeout_s")
    deadline_s = _positive(r, m, "deadline_s", file, max(5.0, timeout_s), "seconds > 0")
    if deadline_s < timeout_s:
        r.problem(file, _line(m, "deadline_s"), f"'deadline_s' ({deadline_s}) is shorter "
                                                f"than one attempt's 'timeout_s' ({timeout_s})")
    return BackendConfig(
        name, base_url.rstrip("/"), auth, timeout_s,
        _positive(r, m, "connect_timeout_s", file, timeout_s, "seconds > 0")
        if connect is not None else None,
        retries, deadline_s, failures,
        _positive(r, breaker, "reset_s", file, 30.0, "seconds > 0"),
        text("idempotency_header", "Idempotency-Key"),
        {str(k): _expand(r, env, file, _line(m, "headers"), v) for k, v in headers.items()})


def _fields(r: _Reader, file: str, m: _Map, key: str, side: str) -> tuple[FieldSpec, ...]:
    if key not in m or m[key] is None:
        return ()
    section = r.mapping(m[key], file, _line(m, key), f"{key!r}")
    if section is None:
        return ()
    out = []
    for name, spec in section.items():
        line = section.key_lines[name]
        if not _FIELD.fullmatch(name):
            r.problem(file, line, f"{side} {name!r}: a name of letters, digits and '_'")
            continue
        if isinstance(spec, str):  # shorthand: `order_id: string`
            spec_map = _empty()
            spec_map.update(type=spec)
            spec_map.line, spec_map.key_lines = line, {"type": line}
        elif (found := r.mapping(spec, file, line, f"{side} {name!r}")) is not None:
            spec_map = found
        else:
            continue
        allowed = ("type", "required", "pattern") + (("from",) if side == "output"
                                                      else ("context", "to"))
        r.keys(spec_map, file, allowed, f"{side} {name!r}")
        type_ = str(spec_map.get("type", "string"))
        if type_ not in FIELD_TYPES:
            r.problem(file, _line(spec_map, "type"), f"{side} {name!r}: unknown type "
                                                     f"{type_!r} (one of {', '.join(FIELD_TYPES)})")
        pattern = str(r.typed(spec_map, "pattern", file, str, "", "a regular expression"))
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                r.problem(file, _line(spec_map, "pattern"), f"bad regular expression: {exc}")
                pattern = ""
        context = str(r.typed(spec_map, "context", file, str, "", "a context field"))
        if context and context not in _CONTEXTS:
            r.problem(file, _line(spec_map, "context"), f"input {name!r}: unknown context "
                                                        f"{context!r} (one of "
                                                        f"{', '.join(_CONTEXTS)})")
        out.append(FieldSpec(name, type_, bool(r.typed(spec_map, "required", file, bool, True,
                                                       "true or false")),
                             str(r.typed(spec_map, "from", file, str, name, "a dotted path")),
                             context, pattern,
                             str(r.typed(spec_map, "to", file, str, name, "a dotted path"))))
    return tuple(out)


def _action(r: _Reader, file: str, name: str, m: _Map,
            backends: Mapping[str, BackendConfig]) -> HttpAction | None:
    r.keys(m, file, ("backend", "method", "path", "inputs", "outputs", "idempotent",
                     "timeout_s", "errors", "description"), f"action {name!r}")
    backend = str(r.typed(m, "backend", file, str, "", "a backend name"))
    if backend not in backends:
        r.problem(file, _line(m, "backend"), f"action {name!r}: unknown backend {backend!r} "
                                             f"(defined: {', '.join(backends) or 'none'})")
    method = str(r.typed(m, "method", file, str, "GET", "an HTTP method")).upper()
    if method not in METHODS:
        r.problem(file, _line(m, "method"), f"action {name!r}: method must be one of "
                                            f"{', '.join(METHODS)}, got {method!r}")
    path = str(r.typed(m, "path", file, str, "", "a path"))
    if not path.startswith("/"):
        r.problem(file, _line(m, "path"), f"action {name!r}: 'path' must start with '/'")
    inputs = _fields(r, file, m, "inputs", "input")
    outputs = _fields(r, file, m, "outputs", "output")
    names = {f.name for f in inputs}
    for placeholder in _PLACEHOLDER.findall(path):
        if placeholder not in names:
            r.problem(file, _line(m, "path"), f"action {name!r}: the path names "
                                              f"{{{placeholder}}}, which is not an input")
    errors: dict[int, str] = {}
    raw_errors = m.get("errors") or {}
    if not isinstance(raw_errors, dict):
        r.problem(file, _line(m, "errors"), "'errors' must map HTTP statuses to messages")
    else:
        for status, message in raw_errors.items():
            if not str(status).isdigit() or not 400 <= int(status) <= 499:
                r.problem(file, _line(m, "errors"), f"'errors': {status} is not a 4xx "
                                                    f"status (5xx always means unavailable)")
            else:
                errors[int(status)] = str(message)
    timeout = m.get("timeout_s")
    return HttpAction(
        name, backend, method, path, inputs, outputs,
        bool(r.typed(m, "idempotent", file, bool, method in IDEMPOTENT_METHODS,
                     "true or false")) or method in IDEMPOTENT_METHODS,
        _positive(r, m, "timeout_s", file, 1.0, "seconds > 0") if timeout is not None
        else None,
        errors, str(r.typed(m, "description", file, str, "", "a text")), m.line)
