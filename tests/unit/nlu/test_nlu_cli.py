"""``parley nlu train / evaluate / predict`` on a small slice of the demo data."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agents.nlu.cli import nlu
from tests.unit.nlu.cases import write_demo_slice


def test_train_evaluate_predict(tmp_path: Path) -> None:
    data = write_demo_slice(tmp_path / "slice.jsonl")
    out = tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(nlu, ["train", "--data", str(data), "--out", str(out),
                                 "--id-pattern", r"order_id=\b([A-Z]{2}-\d{6})\b"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()

    result = runner.invoke(nlu, ["evaluate", "--model", str(out), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("n", "accuracy", "macro_f1", "ece", "in_scope_accuracy", "oos_recall",
                "entity_f1", "latency_ms_p50", "latency_ms_p99"):
        assert key in report
    assert report["accuracy"] > 0.9

    result = runner.invoke(nlu, ["evaluate", "--model", str(out), "--data", str(data)])
    assert "most confused" in result.output or "accuracy" in result.output

    result = runner.invoke(nlu, ["predict", "--model", str(out), "where is order AB-123456"])
    assert result.exit_code == 0, result.output
    pred = json.loads(result.output)
    assert pred["intent"] == "order_status"
    assert pred["entities"][0]["value"] == "AB-123456"


def test_train_reports_bad_input(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "hi"}\nnot json\n')
    result = CliRunner().invoke(nlu, ["train", "--data", str(data), "--out", str(tmp_path / "m")])
    assert result.exit_code != 0
    assert "bad.jsonl:2" in result.output


