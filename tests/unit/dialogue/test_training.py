"""What retrains a bot's NLU model: its examples and nlu settings, not its replies."""

from __future__ import annotations

import shutil
from pathlib import Path

from agents.dialogue.cli import TEMPLATE
from agents.dialogue.loader import load_bot
from agents.dialogue.training import nlu_cache_key, training_params


def _bot(tmp_path: Path) -> Path:
    folder = tmp_path / "bot"
    shutil.copytree(TEMPLATE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_editing_replies_or_flows_keeps_the_trained_model(tmp_path: Path) -> None:
    folder = _bot(tmp_path)
    before = nlu_cache_key(load_bot(folder))
    responses = folder / "responses.yml"
    responses.write_text(responses.read_text() + "\n# a comment\n")
    assert nlu_cache_key(load_bot(folder)) == before


def test_new_examples_retrain(tmp_path: Path) -> None:
    folder = _bot(tmp_path)
    before = nlu_cache_key(load_bot(folder))
    intents = folder / "intents.yml"
    text = intents.read_text()
    first_example = next(line for line in text.splitlines() if line.strip().startswith("- "))
    intents.write_text(text.replace(first_example, first_example + "\n" + first_example + " now",
                                    1))
    assert nlu_cache_key(load_bot(folder)) != before


def test_the_bots_own_recognisers_are_trained_with(tmp_path: Path) -> None:
    folder = _bot(tmp_path)
    before = nlu_cache_key(load_bot(folder))
    bot_yml = folder / "bot.yml"
    bot_yml.write_text(bot_yml.read_text().replace(
        "nlu:\n", "nlu:\n  id_patterns:\n    ticket_id: '\\b(T\\d{6})\\b'\n"))
    bot = load_bot(folder)
    assert training_params(bot).recognisers.id_patterns == {"ticket_id": r"\b(T\d{6})\b"}
    assert nlu_cache_key(bot) != before
