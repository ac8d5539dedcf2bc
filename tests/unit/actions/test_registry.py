"""The action registry: typed inputs and outputs checked on both sides of the call, and
every way a call can go wrong ending in a failed outcome, never a success."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from agents.actions import (
    ActionContext,
    ActionDefinitionError,
    ActionFailed,
    ActionOutcome,
    ActionRegistry,
    FailureKind,
)

CTX = ActionContext(idempotency_key="e1.c", tenant_id="acme", conversation_id="c1")


class Amount(BaseModel):
    value: float = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class TransferIn(BaseModel):
    amount: Amount
    recipient: str


class TransferOut(BaseModel):
    reference: str


@dataclass
class EchoIn:
    text: str


class EchoOut(TypedDict):
    text: str
    key: str


def registry_with_actions() -> tuple[ActionRegistry, list[Any]]:
    registry = ActionRegistry(default_timeout_s=0.5)
    calls: list[Any] = []

    @registry.action("transfer_money", inputs=TransferIn, outputs=TransferOut)
    async def transfer(inputs: TransferIn, ctx: ActionContext) -> TransferOut:
        """Move money."""
        calls.append((inputs, ctx))
        return TransferOut(reference=f"T-{inputs.recipient}-{inputs.amount.value:g}")

    @registry.action("echo", inputs=EchoIn, outputs=EchoOut)
    async def echo(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        return {"text": inputs.text, "key": ctx.idempotency_key}

    return registry, calls


def run(registry: ActionRegistry, name: str, inputs: Any, **kwargs: Any) -> ActionOutcome:
    return asyncio.run(registry.run(name, inputs, CTX, **kwargs))


def test_a_call_gets_validated_inputs_and_returns_json_outputs() -> None:
    registry, calls = registry_with_actions()
    outcome = run(registry, "transfer_money",
                  {"amount": {"value": "50", "currency": "EUR"}, "recipient": "Anna"})
    assert outcome.ok and outcome.error is None and outcome.kind is None
    assert outcome.outputs == {"reference": "T-Anna-50"}
    (inputs, ctx), = calls
    assert isinstance(inputs, TransferIn) and inputs.amount.value == 50.0
    assert ctx is CTX
    echoed = run(registry, "echo", {"text": "hi"})
    assert echoed.ok and echoed.outputs == {"text": "hi", "key": "e1.c"}
    assert registry.names() == ["echo", "transfer_money"] and "echo" in registry
    assert registry.get("transfer_money").description == "Move money."  # type: ignore[union-attr]


def test_an_unknown_action_fails_and_names_the_known_ones() -> None:
    registry, _ = registry_with_actions()
    outcome = run(registry, "freeze_card", {})
    assert not outcome.ok and outcome.kind is FailureKind.UNKNOWN_ACTION
    assert outcome.error == "no action 'freeze_card' is registered (known: echo, transfer_money)"


@pytest.mark.parametrize(("inputs", "expected"), [
    ({"recipient": "Anna"}, "invalid inputs: amount: Field required"),
    ({"amount": {"value": -5, "currency": "EUR"}, "recipient": "Anna"},
     "invalid inputs: amount.value: Input should be greater than 0"),
    ({"amount": {"value": 5, "currency": "euro"}, "recipient": "Anna"},
     "invalid inputs: amount.currency: String should match pattern '^[A-Z]{3}$'"),
    (["not", "a", "mapping"], "invalid inputs:"),
])
def test_bad_inputs_fail_before_the_call(inputs: Any, expected: str) -> None:
    registry, calls = registry_with_actions()
    outcome = run(registry, "transfer_money", inputs)
    assert not outcome.ok and outcome.kind is FailureKind.INVALID_INPUTS
    assert outcome.error is not None and outcome.error.startswith(expected)
    assert calls == []


def test_an_exception_is_a_failure_with_its_class_and_message() -> None:
    registry = ActionRegistry()

    @registry.action("crash", inputs=EchoIn, outputs=EchoOut)
    async def crash(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        raise ConnectionError("ticketing system refused the connection")

    @registry.action("refuse", inputs=EchoIn, outputs=EchoOut)
    async def refuse(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        raise ActionFailed("order 12345 does not exist")

    crashed = run(registry, "crash", {"text": "x"})
    assert not crashed.ok and crashed.kind is FailureKind.FAILED
    assert crashed.error == "ConnectionError: ticketing system refused the connection"
    refused = run(registry, "refuse", {"text": "x"})
    assert refused.kind is FailureKind.FAILED and refused.error == "order 12345 does not exist"


def test_a_slow_action_times_out_as_a_failure() -> None:
    registry = ActionRegistry(default_timeout_s=5)
    finished = []

    @registry.action("slow", inputs=EchoIn, outputs=EchoOut, timeout_s=0.1)
    async def slow(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        await asyncio.sleep(10)
        finished.append(True)
        return {"text": "late", "key": ""}

    began = time.monotonic()
    outcome = run(registry, "slow", {"text": "x"})
    assert time.monotonic() - began < 2
    assert not outcome.ok and outcome.kind is FailureKind.TIMEOUT
    assert outcome.error == "no result within 0.1 s" and outcome.duration_ms >= 100
    assert finished == []


def test_the_default_timeout_applies_to_actions_without_their_own() -> None:
    registry = ActionRegistry(default_timeout_s=5)

    @registry.action("sleepy", inputs=EchoIn, outputs=EchoOut)
    async def sleepy(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        await asyncio.sleep(10)
        return {"text": "late", "key": ""}

    assert registry.timeout_for("sleepy") == 5
    assert registry.timeout_for("sleepy", 0.05) == 0.05
    outcome = run(registry, "sleepy", {"text": "x"}, default_timeout_s=0.05)
    assert outcome.kind is FailureKind.TIMEOUT and outcome.error == "no result within 0.05 s"


def test_a_timeout_raised_inside_the_action_is_its_failure_not_the_deadline() -> None:
    registry = ActionRegistry(default_timeout_s=5)

    @registry.action("inner", inputs=EchoIn, outputs=EchoOut)
    async def inner(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        raise TimeoutError("CRM read timed out")

    outcome = run(registry, "inner", {"text": "x"})
    assert outcome.kind is FailureKind.FAILED
    assert outcome.error == "TimeoutError: CRM read timed out"


@pytest.mark.parametrize("returned", [None, {"text": "x"}, {"text": 1, "key": "k"}, "done"])
def test_outputs_of_the_wrong_shape_are_a_failure(returned: Any) -> None:
    registry = ActionRegistry()

    @registry.action("sloppy", inputs=EchoIn, outputs=EchoOut)
    async def sloppy(inputs: EchoIn, ctx: ActionContext) -> Any:
        return returned

    outcome = run(registry, "sloppy", {"text": "x"})
    assert not outcome.ok and outcome.kind is FailureKind.INVALID_OUTPUTS
    assert outcome.error is not None and outcome.error.startswith("invalid outputs: ")
    assert outcome.outputs == {}


def test_cancellation_of_the_caller_propagates() -> None:
    registry = ActionRegistry()

    @registry.action("forever", inputs=EchoIn, outputs=EchoOut)
    async def forever(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        await asyncio.sleep(60)
        return {"text": "", "key": ""}

    async def main() -> None:
        task = asyncio.create_task(registry.run("forever", {"text": "x"}, CTX))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def _ok(inputs: Any, ctx: ActionContext) -> dict[str, str]:
    return {}


def _sync(inputs: Any, ctx: ActionContext) -> dict[str, str]:
    return {}


async def _one_argument(inputs: Any) -> dict[str, str]:
    return {}


class Opaque:
    """A class pydantic knows nothing about."""


@pytest.mark.parametrize(("name", "function", "inputs", "problem"), [
    ("Create Ticket", _ok, EchoIn, "a name is 1-100 characters"),
    ("sync", _sync, EchoIn, "the function must be `async def`"),
    ("one_arg", _one_argument, EchoIn, "the function must take two arguments"),
    ("scalar", _ok, int, "inputs must describe an object"),
    ("anything", _ok, object, "inputs must describe an object"),
    ("opaque", _ok, Opaque, "inputs must be a pydantic model, dataclass or TypedDict"),
])
def test_a_wrong_registration_fails_at_start_up(name: str, function: Any, inputs: Any,
                                                problem: str) -> None:
    registry = ActionRegistry()
    with pytest.raises(ActionDefinitionError, match=problem) as raised:
        registry.register(name, function, inputs=inputs, outputs=EchoOut)
    assert str(raised.value).startswith(f"action {name!r}: ")
    assert len(registry) == 0


def test_a_name_is_registered_once() -> None:
    registry, _ = registry_with_actions()
    with pytest.raises(ActionDefinitionError, match="'echo': is already registered"):
        registry.register("echo", _ok, inputs=EchoIn, outputs=EchoOut)


def test_describe_gives_the_json_schemas() -> None:
    registry, _ = registry_with_actions()
    described = registry.get("transfer_money").describe()  # type: ignore[union-attr]
    assert described["name"] == "transfer_money"
    assert described["inputs"]["required"] == ["amount", "recipient"]
    assert described["outputs"]["properties"]["reference"]["type"] == "string"


def test_an_outcome_cannot_be_both() -> None:
    with pytest.raises(ValueError, match="no error"):
        ActionOutcome("x", True, {}, error="boom", kind=FailureKind.FAILED)
    with pytest.raises(ValueError, match="needs an error"):
        ActionOutcome("x", False, {})
