"""``parley bot`` without a broker: what a dry run packs, and the errors a builder sees."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agents.bots.cli import bot
from tests.unit.bots.test_bundle import make_bot


def test_a_dry_run_packs_and_reports_without_publishing(tmp_path: Path) -> None:
    bot_dir, model = make_bot(tmp_path)
    result = CliRunner().invoke(bot, ["publish", str(bot_dir), "--tenant", "acme", "--model",
                                      str(model), "--dry-run"],
                                env={"PARLEY_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                                     "PARLEY_TOPIC_PREFIX": "x."})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("would publish mybot version ")
    assert "for tenant acme (5 files, " in result.output and "bytes) to x.bots" in result.output


def test_a_bad_tenant_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    bot_dir, model = make_bot(tmp_path)
    result = CliRunner().invoke(bot, ["publish", str(bot_dir), "--tenant", "a b", "--model",
                                      str(model)], env={"PARLEY_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code != 0
    assert "invalid tenant id 'a b'" in str(result.exception)


def test_a_dry_run_counts_the_knowledge_documents(tmp_path: Path) -> None:
    bot_dir, model = make_bot(tmp_path)
    (bot_dir / "knowledge" / "bad.jsonl").write_text('{"id": "x", "title": "t"}\n')
    result = CliRunner().invoke(bot, ["publish", str(bot_dir), "--tenant", "acme", "--model",
                                      str(model), "--dry-run"],
                                env={"PARLEY_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code == 0, result.output
    assert "would publish 1 knowledge documents to kb.documents" in result.output
    assert "warning: document x (bad.jsonl:1) rejected" in result.output
