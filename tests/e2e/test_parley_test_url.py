"""``parley test --url``: conversation test cases against the real stack through ``/ws``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner

from agents.dialogue.testcases import NO_STATE, load_cases
from agents.dialogue.testing_cli import default_cases
from agents.dialogue.testing_cli import test as parley_test
from examples import DEMO
from streams.turn_state import BOT_TESTER_ROLE
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline
from tests.tenants import token_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]

STATE_STEPS = ("slot_was_set", "slot_was_not_set", "active_flow", "requested_slot")


async def test_cases_run_against_a_running_stack(pipeline: Pipeline, tmp_path: Path) -> None:
    async with ChatClient(pipeline.url) as chat:  # what the served bot says to a greeting
        await chat.send("hello there")
        greeting = (await chat.next("reply"))["text"]
    cases = tmp_path / "cases.yml"
    cases.write_text(json.dumps({"test_cases": [
        {"test_case": "greeting", "steps": [{"user": "hello there"}, {"bot": greeting}]},
        {"test_case": "wrong text", "steps": [{"user": "hello there"},
                                              {"bot": "a reply nobody wrote"}]},
        {"test_case": "response name", "steps": [{"user": "hello there"},
                                                 {"utter": "utter_greet"}]},
    ]}))
    result = await asyncio.to_thread(  # the command runs its own event loop
        CliRunner().invoke, parley_test,
        [str(tmp_path), "--cases", str(cases), "--url", pipeline.url, "--json",
         "--token", token_for("e2e")])
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["passed"] == 2  # the greeting's text, and its response's name
    failures = {f["test_case"]: f for f in report["failures"]}
    assert set(failures) == {"wrong text"}
    assert greeting in failures["wrong text"]["actual"]


async def test_every_demo_case_runs_against_the_stack_as_a_bot_tester(
        pipeline: Pipeline) -> None:
    """Slots, the active flow and the requested slot are checked through the gateway:
    each case as a new bot tester from /dev/token (development mode, as `parley up`).

    Against the stack the reference CRM answers for the cases' stubbed actions (`actions:`).
    The cases whose stubs fail (the CRM refusing, unreachable, slow) show what the bot says
    then, in process only; every other case passes whole, state steps included (the demo's
    cases check what the CRM answers, not what only a stub would say)."""
    cases = load_cases(default_cases(DEMO.folder))
    stub_fails = {case.name for case in cases
                  if any(not stub.ok for stub in case.actions.values())}
    assert stub_fails and sum(step.kind in STATE_STEPS for case in cases
                              if not case.actions for step in case.steps) >= 5
    result = await asyncio.to_thread(
        CliRunner().invoke, parley_test,
        [str(DEMO.folder), "--url", pipeline.url, "--dev-token", "--json", "--timeout", "20"])
    report = json.loads(result.output)
    by_name = {case.name: case for case in cases}
    for failure in report["failures"]:
        assert failure["actual"] != NO_STATE, result.output
        assert by_name[failure["test_case"]].name in stub_fails, failure
    assert report["passed"] >= len(cases) - len(stub_fails) > 15, result.output


async def test_without_the_role_the_state_steps_fail_saying_why(
        pipeline: Pipeline, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yml"
    cases.write_text(json.dumps({"test_cases": [
        {"test_case": "order", "steps": [{"user": "where is my order?"},
                                         {"utter": "utter_ask_order_id"},
                                         {"requested_slot": "order_id"}]}]}))
    result = await asyncio.to_thread(
        CliRunner().invoke, parley_test,
        [str(DEMO.folder), "--cases", str(cases), "--url", pipeline.url, "--json",
         "--token", token_for("e2e", "plain-user", roles=["agent"])])
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["passed"] == 0, result.output
    (failure,) = report["failures"]
    assert (failure["step"], failure["actual"]) == (3, NO_STATE)  # utter passed: step 3 fails


async def test_only_a_bot_tester_who_asks_sees_the_state(pipeline: Pipeline) -> None:
    """Three users ask the same; the frames they get differ only by what they may see."""
    async def reply_to(token: str, debug: bool) -> dict[str, Any]:
        client = ChatClient(pipeline.url, token=token)
        if debug:
            client.url += "&debug=1"
        async with client as chat:
            await chat.send("where is my order?")
            return await chat.next("reply")

    tester = token_for("e2e", "tester-1", roles=[BOT_TESTER_ROLE])
    plain = token_for("e2e", "plain-1", roles=["agent"])
    shown = await reply_to(tester, debug=True)
    assert shown["turn_end"] is True and shown["response"] == "utter_ask_order_id"
    assert shown["state"]["requested_slot"] == "order_id" and shown["state"]["active_flow"]
    for token, debug in ((plain, True), (tester, False), (plain, False)):
        frame = await reply_to(token, debug)
        assert frame["response"] == "utter_ask_order_id" and frame["turn_end"] is True
        assert "state" not in frame, (token == tester, debug)


async def test_dev_token_gives_the_bot_tester_role_and_no_other(pipeline: Pipeline) -> None:
    http = pipeline.url.replace("ws://", "http://")
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.get(f"{http}/dev/token", params={"role": "agent"})
        granted = await client.get(f"{http}/dev/token", params={"role": BOT_TESTER_ROLE})
    assert refused.status_code == 400 and "bot_tester" in refused.text
    claims = jwt.decode(granted.json()["token"], options={"verify_signature": False})
    assert claims["roles"] == [BOT_TESTER_ROLE]
