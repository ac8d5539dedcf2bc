"""``parley validate`` and ``parley init`` (train and shell need a trained model: the
integration tier runs them)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agents.dialogue.cli import init, validate
from agents.dialogue.loader import load_bot, validate_bot
from tests.unit.dialogue.conftest import WriteBot


def test_validate_prints_every_problem_and_exits_1(write_bot: WriteBot) -> None:
    folder = write_bot(flows_yml="flows:\n  track_order:\n    steps:\n      - collect: nope\n"
                                 "      - say: nothing\n")
    result = CliRunner().invoke(validate, [str(folder)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("flows.yml:4: flow 'track_order' collects the unknown slot "
                               "'nope'") for line in lines)
    assert any(line.startswith("flows.yml:5: ") for line in lines)
    assert "error(s)" in result.stderr


def test_validate_accepts_a_good_bot(write_bot: WriteBot) -> None:
    result = CliRunner().invoke(validate, [str(write_bot())])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stderr


def test_init_creates_a_valid_bot_with_a_readme(tmp_path: Path) -> None:
    target = tmp_path / "newbot"
    result = CliRunner().invoke(init, [str(target)])
    assert result.exit_code == 0, result.output
    assert validate_bot(target) == []
    bot = load_bot(target)
    readme = (target / "README.md").read_text()
    for name in ("bot.yml", "intents.yml", "slots.yml", "responses.yml", "flows.yml",
                 "knowledge/"):
        assert f"`{name}`" in readme
    assert bot.has_knowledge and "track_order" in bot.flows


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(init, [str(tmp_path)])
    assert result.exit_code != 0
    assert "not empty" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
