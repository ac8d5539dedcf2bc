"""``parley bot`` without a broker: what a dry run packs, and the errors a builder sees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from agents.bots.cli import bot
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
