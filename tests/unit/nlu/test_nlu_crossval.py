"""``parley nlu cross-validate``: stratified folds, one model per fold, pooled figures."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.nlu.cli import nlu
from agents.nlu.crossval import stratified_folds
from agents.nlu.data import Example, load_examples
from tests.unit.nlu.cases import write_demo_slice

EXAMPLES = [Example(f"text {i}", intent) for i, intent in
            enumerate(["a"] * 10 + ["b"] * 7 + ["c"] * 3 + [None] * 4)]


def test_folds_partition_the_examples_and_share_out_every_intent() -> None:
    folds = stratified_folds(EXAMPLES, 3, seed=0)
    everything = [i for fold in folds for i in fold]
    assert sorted(everything) == list(range(len(EXAMPLES)))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for intent in ("a", "b", "c", None):
        per_fold = [sum(1 for i in fold if EXAMPLES[i].intent == intent) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1, (intent, per_fold)


def test_folds_follow_the_seed() -> None:
    assert stratified_folds(EXAMPLES, 4, seed=1) == stratified_folds(EXAMPLES, 4, seed=1)
    assert stratified_folds(EXAMPLES, 4, seed=1) != stratified_folds(EXAMPLES, 4, seed=2)


@pytest.mark.parametrize(("folds", "message"), [(1, "at least 2 folds"),
                                                 (25, "cannot fill 25 folds")])
def test_impossible_folds_are_refused(folds: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_folds(EXAMPLES, folds)


def test_cli_predicts_every_example_once_with_a_model_that_never_saw_it(tmp_path: Path) -> None:
    data = write_demo_slice(tmp_path / "slice.jsonl")
    examples = load_examples([data])
    result = CliRunner().invoke(nlu, ["cross-validate", "--data", str(data), "--folds", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])  # progress lines come first
    folds = report["per_fold"]
    assert (report["n"], report["folds"], len(folds)) == (len(examples), 3, 3)
    assert sum(f["n"] for f in folds) == len(examples)
    assert all(f["n"] + f["n_train"] == len(examples) for f in folds)
    # five clearly different intents: every fold's model gets most of its unseen ones right
    assert report["accuracy"] >= 0.8 and min(f["accuracy"] for f in folds) >= 0.75
    assert report["accuracy_std"] >= 0 and "in_scope_accuracy" in report
    tp, fp, fn = (sum(f[f"entity_{c}"] for f in folds) for c in ("tp", "fp", "fn"))
    assert tp + fn == sum(len(e.entities or ()) for e in examples)  # every gold span counted
    assert report["entity_f1"] == round(2 * tp / (2 * tp + fp + fn), 4)


def test_cli_readable_report_has_a_line_per_fold(tmp_path: Path) -> None:
    data = write_demo_slice(tmp_path / "slice.jsonl")
    result = CliRunner().invoke(nlu, ["cross-validate", "--data", str(data), "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "2-fold cross-validation" in result.output and "accuracy" in result.output
    assert Counter(line.split(" (")[0].strip() for line in result.output.splitlines()
                   if line.strip().startswith("fold ") and "examples)" in line) == {
        "fold 1": 1, "fold 2": 1}


def test_cli_refuses_too_few_examples_clearly(tmp_path: Path) -> None:
    data = tmp_path / "tiny.jsonl"
    data.write_text('{"text": "hi", "intent": "greet"}\n{"text": "bye", "intent": "bye"}\n')
    result = CliRunner().invoke(nlu, ["cross-validate", "--data", str(data), "--folds", "3"])
    assert result.exit_code != 0
    assert "2 examples cannot fill 3 folds" in result.output and "Traceback" not in result.output
