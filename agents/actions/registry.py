"""A registry of named actions with typed inputs and outputs.

A flow step ``action: create_ticket`` names an action; the action agent
(:mod:`agents.actions.agent`) looks the name up here and runs it. An action is
an async function of its inputs and a :class:`ActionContext`, registered with
the types of both sides::

    registry = ActionRegistry()

    class TicketIn(BaseModel):
        issue_description: str
        email: EmailStr

    class TicketOut(BaseModel):
        ticket_id: str

    @registry.action("create_ticket", inputs=TicketIn, outputs=TicketOut)
    async def create_ticket(inputs: TicketIn, ctx: ActionContext) -> TicketOut:
        ...  # call the ticketing system with ctx.idempotency_key

Types are pydantic models, dataclasses or TypedDicts: anything pydantic's
``TypeAdapter`` validates into an object. :meth:`ActionRegistry.run` checks the
inputs before the call and the outputs after it, and never raises for anything
a request brings: an unknown action, inputs or outputs of the wrong shape, an
exception or a timeout each give a failed :class:`ActionOutcome` with a clear
error and its :class:`FailureKind`. Only an outcome whose outputs passed their
type is a success, which is what lets a flow tell the user something happened.
A registration that cannot work (a name, a type, a function of the wrong
shape) raises :class:`ActionDefinitionError` when the worker starts.

Pydantic does the validation: it is what typed Python services validate JSON
with, and it gives every error its field path (``amount.value: Input should be a
valid number``), which is what a bot builder needs to read.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from agents.actions.errors import (
    ActionDefinitionError,
    ActionFailed,
    ActionOutcomeUnknown,
    ActionUnavailable,
)

__all__ = [
    "ActionContext",
    "ActionDefinition",
    "ActionFunction",
    "ActionOutcome",
    "ActionRegistry",
    "FailureKind",
]

logger = logging.getLogger(__name__)

#: An action: ``await function(inputs, context)`` returns its outputs.
ActionFunction = Callable[[Any, "ActionContext"], Awaitable[Any]]
F = TypeVar("F", bound=ActionFunction)

#: Action names: lower case, digits, ``_``, ``.`` and ``-`` (``crm.create_ticket``).
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,99}")
#: An error kept in a result is cut to this many characters.
MAX_ERROR_CHARS = 1000


class FailureKind(StrEnum):
    """Why an action call failed (``error_kind`` on ``actions.results``)."""

    UNKNOWN_ACTION = "unknown_action"
    INVALID_INPUTS = "invalid_inputs"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INVALID_OUTPUTS = "invalid_outputs"
    UNAVAILABLE = "unavailable"
    """The business system could not be reached (:class:`ActionUnavailable`)."""
    UNKNOWN = "unknown"
    """A write went out and no answer came: it may have been done
    (:class:`ActionOutcomeUnknown`, or the deadline of an action registered ``writes``)."""


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action knows about the call besides its inputs.

    ``idempotency_key``: the request's event id. A request can be delivered twice (the
    bus is at-least-once), so an action that changes a business system passes this key
    on (an ``Idempotency-Key`` header, a client reference) for the system to do it once.
    """

    idempotency_key: str
    tenant_id: str
    conversation_id: str
    user_id: str = ""
    channel: str = ""
    bot_version: str = ""
    #: When the call was asked for (the request's timestamp, epoch ms; 0: unknown). The
    #: same for every run of one request: what an action derives from the time (a token's
    #: issue time) must come from here, so that a run again sends what the first sent.
    requested_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """The result of one call: ``ok`` with ``outputs`` (JSON-ready), or an ``error``."""

    action: str
    ok: bool
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    kind: FailureKind | None = None
    duration_ms: int = 0

    def __post_init__(self) -> None:
        if self.ok and (self.error is not None or self.kind is not None):
            raise ValueError("a successful outcome carries no error")
        if not self.ok and (not self.error or self.kind is None):
            raise ValueError("a failed outcome needs an error and its kind")

    @classmethod
    def failure(cls, action: str, kind: FailureKind, error: str,
                duration_ms: int = 0) -> ActionOutcome:
        return cls(action, False, {}, error[:MAX_ERROR_CHARS] or kind.value, kind, duration_ms)


@dataclass(frozen=True)
class ActionDefinition:
    """One registered action."""

    name: str
    function: ActionFunction
    input_type: Any
    output_type: Any
    inputs: TypeAdapter[Any]
    outputs: TypeAdapter[Any]
    timeout_s: float | None = None
    description: str = ""
    #: It changes something in the business system: cut off by its deadline, its outcome
    #: is unknown (kind ``unknown``), not merely late.
    writes: bool = False

    def describe(self) -> dict[str, Any]:
        """Name, description and the JSON schemas of the inputs and outputs."""
        return {"name": self.name, "description": self.description,
                "inputs": self.inputs.json_schema(), "outputs": self.outputs.json_schema(),
                "timeout_s": self.timeout_s}


class ActionRegistry:
    """Named actions; :meth:`run` calls one with validation and a timeout.

    ``default_timeout_s`` applies to actions registered without their own
    (``PARLEY_ACTION_TIMEOUT_S`` in a worker: :class:`~agents.actions.settings.ActionSettings`).
    """

    def __init__(self, *, default_timeout_s: float = 10.0) -> None:
        if not default_timeout_s > 0:
            raise ValueError("default_timeout_s must be > 0")
        self.default_timeout_s = default_timeout_s
        self._actions: dict[str, ActionDefinition] = {}

    # --- registration -------------------------------------------------------------
    def action(self, name: str, *, inputs: Any, outputs: Any, timeout_s: float | None = None,
               description: str = "", writes: bool = False) -> Callable[[F], F]:
        """Decorator: register the decorated async function as action ``name``."""

        def register(function: F) -> F:
            self.register(name, function, inputs=inputs, outputs=outputs, timeout_s=timeout_s,
                          description=description or inspect.getdoc(function) or "",
                          writes=writes)
            return function

        return register

    def register(self, name: str, function: ActionFunction, *, inputs: Any, outputs: Any,
                 timeout_s: float | None = None, description: str = "",
                 writes: bool = False) -> ActionDefinition:
        """Register ``function`` as action ``name``; raises :class:`ActionDefinitionError`."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ActionDefinitionError(str(name), "a name is 1-100 characters of a-z, 0-9, "
                                                   "'_', '.' or '-', starting with a letter")
        if name in self._actions:
            raise ActionDefinitionError(name, "is already registered")
        if not inspect.iscoroutinefunction(function):
            raise ActionDefinitionError(name, "the function must be `async def`")
        _check_parameters(name, function)
        if timeout_s is not None and not timeout_s > 0:
            raise ActionDefinitionError(name, f"timeout_s must be > 0, got {timeout_s}")
        definition = ActionDefinition(
            name, function, inputs, outputs, _object_adapter(name, "inputs", inputs),
            _object_adapter(name, "outputs", outputs), timeout_s, description, writes)
        self._actions[name] = definition
        return definition

    # --- lookup ---------------------------------------------------------------------
    def get(self, name: str) -> ActionDefinition | None:
        return self._actions.get(name)

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __len__(self) -> int:
        return len(self._actions)

    def timeout_for(self, name: str, default_timeout_s: float | None = None) -> float:
        """The timeout of action ``name``: its own, else ``default_timeout_s``, else the
        registry's default."""
        definition = self._actions.get(name)
        if definition is not None and definition.timeout_s is not None:
            return definition.timeout_s
        return default_timeout_s if default_timeout_s is not None else self.default_timeout_s

    # --- calling ----------------------------------------------------------------------
    async def run(self, name: str, inputs: Mapping[str, Any], context: ActionContext, *,
                  default_timeout_s: float | None = None) -> ActionOutcome:
        """Call action ``name``: inputs checked, the call bounded by its timeout
        (:meth:`timeout_for`), outputs checked. Returns a failed outcome for anything that
        goes wrong; only the caller's own cancellation (a worker shutting down) propagates."""
        definition = self._actions.get(name)
        if definition is None:
            known = ", ".join(self.names()) or "none"
            return ActionOutcome.failure(name, FailureKind.UNKNOWN_ACTION,
                                         f"no action {name!r} is registered (known: {known})")
        try:
            arguments = definition.inputs.validate_python(dict(inputs))
        except ValidationError as exc:
            return ActionOutcome.failure(name, FailureKind.INVALID_INPUTS,
                                         f"invalid inputs: {_errors(exc)}")
        except (TypeError, ValueError) as exc:  # inputs that are not a mapping
            return ActionOutcome.failure(name, FailureKind.INVALID_INPUTS,
                                         f"invalid inputs: {exc}")
        timeout_s = self.timeout_for(name, default_timeout_s)
        began = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - began) * 1000)

        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                returned = await definition.function(arguments, context)
        except TimeoutError as exc:
            if deadline.expired():
                logger.warning("action.timeout action=%s key=%s timeout_s=%s", name,
                               context.idempotency_key, timeout_s)
                # A write cut off mid-call may have been done: say so, not "timeout".
                kind = FailureKind.UNKNOWN if definition.writes else FailureKind.TIMEOUT
                return ActionOutcome.failure(name, kind,
                                             f"no result within {timeout_s:g} s", elapsed_ms())
            return self._raised(name, context, exc, elapsed_ms())
        except ActionOutcomeUnknown as exc:
            logger.warning("action.outcome_unknown action=%s key=%s error=%s", name,
                           context.idempotency_key, exc)
            return ActionOutcome.failure(name, FailureKind.UNKNOWN, str(exc), elapsed_ms())
        except ActionUnavailable as exc:
            logger.info("action.unavailable action=%s key=%s error=%s", name,
                        context.idempotency_key, exc)
            return ActionOutcome.failure(name, FailureKind.UNAVAILABLE, str(exc), elapsed_ms())
        except ActionFailed as exc:
            logger.info("action.failed action=%s key=%s error=%s", name,
                        context.idempotency_key, exc)
            return ActionOutcome.failure(name, FailureKind.FAILED, str(exc), elapsed_ms())
        except Exception as exc:
            return self._raised(name, context, exc, elapsed_ms())
        duration_ms = elapsed_ms()
        try:
            validated = definition.outputs.validate_python(returned)
            outputs = definition.outputs.dump_python(validated, mode="json")
        except ValidationError as exc:
            return ActionOutcome.failure(name, FailureKind.INVALID_OUTPUTS,
                                         f"invalid outputs: {_errors(exc)}", duration_ms)
        return ActionOutcome(name, True, outputs, duration_ms=duration_ms)

    @staticmethod
    def _raised(name: str, context: ActionContext, exc: Exception,
                duration_ms: int) -> ActionOutcome:
        logger.warning("action.raised action=%s key=%s", name, context.idempotency_key,
                       exc_info=exc)
        return ActionOutcome.failure(name, FailureKind.FAILED,
                                     f"{type(exc).__name__}: {exc}", duration_ms)


def _check_parameters(name: str, function: ActionFunction) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C function: cannot be checked here
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    required = [p for p in positional if p.default is p.empty]
    if len(required) > 2 or (len(positional) < 2 and not variadic):
        raise ActionDefinitionError(
            name, "the function must take two arguments, (inputs, context)")


def _object_adapter(name: str, side: str, type_: Any) -> TypeAdapter[Any]:
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(type_)
        schema = adapter.json_schema()
    except (PydanticSchemaGenerationError, TypeError) as exc:
        raise ActionDefinitionError(
            name, f"{side} must be a pydantic model, dataclass or TypedDict: {exc}") from exc
    if schema.get("type") != "object":
        raise ActionDefinitionError(
            name, f"{side} must describe an object (a pydantic model, dataclass or TypedDict), "
                  f"got {type_!r}")
    return adapter


def _errors(exc: ValidationError) -> str:
    """Pydantic's errors as ``field.path: message`` (at most five), without the inputs."""
    found = [f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
             for error in exc.errors(include_url=False, include_input=False)]
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return "; ".join(found[:5]) + more
