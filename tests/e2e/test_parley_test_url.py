"""``parley test --url``: conversation test cases against the real stack through ``/ws``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.dialogue.testing_cli import test as parley_test
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline
from tests.tenants import token_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(180)]


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
