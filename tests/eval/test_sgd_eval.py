"""Dialogue state tracking of the SGD example bots, on Schema-Guided Dialogue data.

``examples/sgd-banks`` was tuned on the Banks_2 dev dialogues
(../shared/datasets/sgd_banking, CC BY-SA 4.0); the issue's targets are joint goal
accuracy >= 0.80 with active intent accuracy >= 0.95. Floors sit slightly under what was
measured (2026-12-07: joint goal 0.917, average goal 0.949, active intent 0.968,
requested slots F1 0.987 over 1,108 frames). Payment_1's dialogues are held back: its bot
is checked on them outside this repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.dialogue.sgd_cli import dialogue

ROOT = Path(__file__).resolve().parents[2]
SGD = ROOT.parent / "shared" / "datasets" / "sgd_banking"  # ../shared/datasets, as the others
FLOORS = {"joint_goal_accuracy": 0.89, "active_intent_accuracy": 0.955,
          "average_goal_accuracy": 0.93, "requested_slots_f1": 0.95}

pytestmark = [pytest.mark.datasets, pytest.mark.timeout(600),
              pytest.mark.skipif(not SGD.is_dir(), reason=f"{SGD} is absent (a user's checkout)")]


def test_sgd_banks_tracks_banks_2_dialogues(tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.jsonl"
    result = CliRunner().invoke(dialogue, [
        "evaluate", "--bot", str(ROOT / "examples" / "sgd-banks"),
        "--dialogues", str(SGD / "dev_dialogues.json"), "--service", "Banks_2",
        "--predictions", str(predictions), "--cache", str(tmp_path / "models"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    dialogues = {d["dialogue_id"]: d for d in json.loads((SGD / "dev_dialogues.json").read_text())}
    frames = sum(1 for d in dialogues.values() for t in d["turns"] if t["speaker"] == "USER"
                 for f in t["frames"] if f["service"] == "Banks_2")
    assert metrics["n_frames"] == frames
    for name, floor in FLOORS.items():
        assert metrics[name] >= floor, (name, metrics)
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) == frames
    for line in lines:
        turn = dialogues[line["dialogue_id"]]["turns"][line["turn_index"]]
        assert turn["speaker"] == "USER" and line["service"] == "Banks_2"
        assert line["active_intent"] in ("NONE", "CheckBalance", "TransferMoney")
