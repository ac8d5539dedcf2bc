"""``parley bot`` without a broker: what a dry run packs, and the errors a builder sees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from agents.bots.catalog import PublishedVersion
from agents.bots.cli import bot, version_line
from agents.dialogue.cli import TEMPLATE
from agents.dialogue.loader import load_bot

ENV = {"PARLEY_KAFKA_BOOTSTRAP": "127.0.0.1:1", "PARLEY_TOPIC_PREFIX": "x."}


def template_bot(tmp_path: Path) -> tuple[Path, Path]:
    """The `parley init` bot, and a model folder whose manifest knows its intents."""
    folder = tmp_path / "shop"
    shutil.copytree(TEMPLATE, folder)
    model = tmp_path / "model"
    model.mkdir()
    labels = sorted(load_bot(folder).intents)
    (model / "manifest.json").write_text(json.dumps({"format": 2, "labels": labels}))
    (model / "intent.onnx").write_bytes(b"\x08\x07" * 1000)
    return folder, model


def publish(*args: str) -> Result:
    return CliRunner().invoke(bot, ["publish", *args], env=ENV)


def test_a_dry_run_packs_and_reports_without_publishing(tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    result = publish(str(folder), "--tenant", "acme", "--model", str(model), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("would publish shop version ")
    assert "for tenant acme (" in result.output and "bytes) to x.bots" in result.output
    assert "would publish 1 knowledge documents to x.kb.documents" in result.output


def test_a_bad_tenant_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    result = publish(str(folder), "--tenant", "a b", "--model", str(model))
    assert result.exit_code != 0
    assert "invalid tenant id 'a b'" in str(result.exception)


def test_a_broken_bot_is_not_published_and_every_problem_has_its_line(tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    flows = folder / "flows.yml"
    flows.write_text(flows.read_text() + "  broken:\n    steps:\n      - collect: no_such_slot\n")
    result = publish(str(folder), "--tenant", "acme", "--model", str(model), "--dry-run")
    assert result.exit_code == 1
    assert "Error: nothing was published:" in result.output
    assert "flows.yml:" in result.output and "no_such_slot" in result.output


def test_a_model_trained_on_other_intents_is_refused(tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    labels = sorted(load_bot(folder).intents)
    (model / "manifest.json").write_text(json.dumps(
        {"labels": [label for label in labels if label != "greet"] + ["transfer_money"]}))
    result = publish(str(folder), "--tenant", "acme", "--model", str(model), "--dry-run")
    assert result.exit_code == 1
    assert (f"the model in {model} was not trained on this bot's intents; it lacks greet; "
            "it knows transfer_money, which the bot does not") in result.output
    (model / "manifest.json").write_text("{}")
    result = publish(str(folder), "--tenant", "acme", "--model", str(model), "--dry-run")
    assert result.exit_code == 1 and "is not a trained NLU model's manifest" in result.output


def test_rejected_knowledge_documents_are_reported(tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    (folder / "knowledge" / "bad.jsonl").write_text('{"id": "x", "title": "t"}\n')
    result = publish(str(folder), "--tenant", "acme", "--model", str(model), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would publish 1 knowledge documents" in result.output
    assert "warning: document x (bad.jsonl:1) rejected" in result.output


def test_a_canary_percentage_outside_1_to_99_is_refused_before_anything_is_sent(
        tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    for percent, says in (("100", "promote it"), ("0", "parley bot rollback"),
                          ("-5", "1-99, not -5"), ("250", "1-99, not 250")):
        result = publish(str(folder), "--tenant", "acme", "--model", str(model),
                         "--canary", percent, "--dry-run")
        assert result.exit_code == 1, (percent, result.output)
        assert says in result.output and "Traceback" not in result.output


def test_a_canary_dry_run_says_it_is_a_canary_and_keeps_its_documents_back(
        tmp_path: Path) -> None:
    folder, model = template_bot(tmp_path)
    result = publish(str(folder), "--tenant", "acme", "--model", str(model),
                     "--canary", "10", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "canary for 10 % of its users" in result.output
    assert "published when it is promoted" in result.output
    assert "knowledge documents to" not in result.output


def test_changing_a_canary_refuses_a_percentage_it_cannot_take() -> None:
    result = CliRunner().invoke(bot, ["canary", "--tenant", "acme", "--percent", "100"],
                                env=ENV)
    assert result.exit_code == 1 and "promote it" in result.output


def test_a_line_of_the_list_says_stable_or_canary_and_its_percentage() -> None:
    stable = PublishedVersion("acme", "a" * 64, "shop", 0, "ops@ci", 3, 1234)
    canary = PublishedVersion("acme", "b" * 64, "shop", 0, "ops@ci", 3, 1234, 10)
    assert version_line(stable).split("\t")[:4] == ["acme", "stable", "shop", "a" * 12]
    assert version_line(canary).split("\t")[:4] == ["acme", "canary 10%", "shop", "b" * 12]
