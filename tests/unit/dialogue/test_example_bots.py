"""The example bots pass their own conversation test cases (``parley test``, in process:
their NLU models are trained here, a few seconds each; the demo's knowledge index too).
The demo's cases cover every flow and the repair patterns a conversation can show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.dialogue.testing_cli import test as parley_test

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

pytestmark = [pytest.mark.timeout(300)]


@pytest.mark.parametrize("bot", ["demo", "sgd-banks", "sgd-payment"])
def test_the_example_bot_passes_its_test_cases(bot: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(parley_test, [str(EXAMPLES / bot), "--json",
                                              "--cache", str(tmp_path)])
    report = json.loads(result.output)
    assert report["failures"] == [] and report["passed"] >= 3, report
    assert result.exit_code == 0
