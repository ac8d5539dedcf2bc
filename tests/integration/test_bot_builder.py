"""A new builder's path, scripted: ``parley init`` → ``validate`` → ``train`` → ``test`` →
``shell``.

No broker and no Redis: training and the shell run in-process. Training the template bot
takes a few seconds (90 examples, an index of one document).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.dialogue.cli import init, shell, train, validate
from agents.dialogue.testing_cli import test as parley_test

pytest.importorskip("sklearn", reason="training needs the train extra")


def test_init_validate_train_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path / "data"))
    bot = tmp_path / "mybot"
    runner = CliRunner()
    assert runner.invoke(init, [str(bot)]).exit_code == 0
    checked = runner.invoke(validate, [str(bot)])
    assert checked.exit_code == 0, checked.output

    trained = runner.invoke(train, [str(bot)])
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout.strip().splitlines()[-1])
    model = Path(report["nlu_model"])
    assert (model / "manifest.json").is_file()
    assert model.parent == tmp_path / "data" / "bots" and model.name.startswith("nlu-")
    again = runner.invoke(train, [str(bot)])
    assert "training the NLU model" not in again.output  # cached by what it is built from

    (bot / "tests").mkdir(exist_ok=True)
    (bot / "tests" / "orders.yml").write_text(
        "test_cases:\n"
        "  - test_case: an order tracked\n"
        "    steps:\n"
        "      - user: where is my order?\n"
        "      - requested_slot: order_id\n"
        "      - user: '12345'\n"
        "      - slot_was_set: {order_id: '12345'}\n"
        "  - test_case: a wrong expectation fails\n"
        "    steps:\n"
        "      - user: where is my order?\n"
        "      - active_flow: null\n")
    tested = runner.invoke(parley_test, [str(bot), "--json"])
    assert tested.exit_code == 1, tested.output
    outcome = json.loads(tested.stdout)
    assert (outcome["passed"], outcome["failed"]) == (1, 1)
    assert outcome["failures"][0]["test_case"] == "a wrong expectation fails"

    chat = runner.invoke(shell, [str(bot), "--debug"], input=(
        "where is my order?\n12345\nhow long does delivery take?\n"
        "I want to talk to a human\nhello?\n/say hi\n/claim\n/say Hi, Sam here.\n"
        "/note wants a refund\nthanks Sam\n/release\nwhere is my order?\n"))
    assert chat.exit_code == 0, chat.output
    replies = [line for line in chat.stdout.splitlines() if "bot> " in line or "agent> " in line]
    assert "order number" in replies[0]
    assert "12345" in replies[1]
    assert "3 to 5 working days" in replies[2]
    assert "person" in replies[3]
    # handed over: no flow runs; the user hears they wait for a person
    assert "in the queue for a person" in replies[4]
    assert "/claim" in chat.stderr  # the shell says how to play the person
    # The builder plays the person: /say before /claim is refused, then claim, speak, note
    # (nothing said), the bot stays quiet at "thanks Sam", release: the bot answers again.
    assert "/claim it first" in chat.stderr
    assert "shell-agent" in replies[5]  # utter_handoff_claimed names who joined
    assert replies[6].endswith("shell-agent> Hi, Sam here.")  # the person speaks
    assert "(note kept with the conversation)" in chat.stderr
    assert "(relayed to shell-agent)" in chat.stderr  # "thanks Sam": to the person
    assert "back with the assistant" in replies[7]
    assert "order number" in replies[8] and len(replies) == 9
    assert "flow: track_order | asking: order_id" in chat.stderr
    assert "HANDOFF (held by shell-agent)" in chat.stderr
