"""NLU evaluation floors on the shared development datasets.

Each floor sits slightly under the figure measured when the test was written,
so a regression fails. Splits are made inside the given development data
(Banking77: 20% held out; CLINC150: train → val; NLU++: 5-fold cross-validation);
calibration and the out-of-scope threshold are tuned on a split of the
training part only. Figures measured (2-core machine, shared):

* Banking77 holdout: top-1 accuracy 0.901, accuracy with oos decision 0.893,
  calibration error (ECE) 0.020
* CLINC150 val: in-scope accuracy 0.921, oos recall 0.71, ECE 0.019
* NLU++ banking, 5-fold (``parley nlu cross-validate``): strict entity micro F1
  0.802 (P 0.827, R 0.779); 0.806 with the same folds when each model saw its
  training examples in shuffled order instead of file order. Seed 0's folds are
  kind ones: seeds 1/2/3 give 0.755/0.768/0.764. With the entity encoder
  (``--entity-encoder minilm-tuned``): 0.805/0.800/0.795/0.810 for seeds 0-3

With a context encoder (consulted under 0.9 confidence):

* Banking77 holdout, all-mpnet-base-v2 in int8 (``mpnet-int8``): top-1 accuracy
  0.9275, accuracy with oos decision 0.9135, ECE 0.021 (MiniLM: 0.918 and 0.906,
  before the context model left the wordllama vector out)
* CLINC150 val, in-scope loss 0.003 for the thresholds: in-scope accuracy 0.952,
  oos recall 0.72; with the encoder fine-tuned on the training split
  (``minilm-tuned``) 0.959 and 0.76 (0.962 and 0.76 with the refit that
  ``parley nlu train`` does)
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agents.nlu.crossval import cross_validate, stratified_folds
from agents.nlu.data import load_examples
from agents.nlu.evaluate import evaluate
from agents.nlu.model import NLUModel
from agents.nlu.train import TrainingParams, train_model

DATASETS = Path(__file__).parents[2].parent / "shared" / "datasets"

pytestmark = [
    pytest.mark.datasets,
    pytest.mark.skipif(
        not DATASETS.is_dir(), reason=f"evaluation datasets not found at {DATASETS}"
    ),
]

# Refit skipped: the model trained without its validation split is evaluated
# (half the training time; about 0.3 points under the refitted model).
FAST = TrainingParams(refit=False)
WITH_CONTEXT = TrainingParams(refit=False, context_encoder="minilm")
WITH_MPNET = TrainingParams(refit=False, context_encoder="mpnet-int8")
WITH_ENTITY_ENCODER = TrainingParams(refit=False, entity_encoder="minilm-tuned-int8")


def _need(*parts: str) -> Path:
    path = DATASETS.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def _banking77_holdout(tmp_path: Path, params: TrainingParams) -> dict[str, Any]:
    """Train on a shuffled 80 % of Banking77's train split; the report on the rest."""
    examples = load_examples([_need("banking77", "train.jsonl")])
    random.Random(0).shuffle(examples)
    cut = int(len(examples) * 0.8)
    train_model(examples[:cut], tmp_path / "m", params)
    return evaluate(NLUModel.load(tmp_path / "m"), examples[cut:], latency_samples=100)


def _clinc150_val(tmp_path: Path, params: TrainingParams) -> dict[str, Any]:
    """Train on CLINC150's train split; the report on its val split."""
    train = load_examples([_need("clinc150", "train.jsonl")])
    val = load_examples([_need("clinc150", "val.jsonl")])
    train_model(train, tmp_path / "m", params)
    return evaluate(NLUModel.load(tmp_path / "m"), val, latency_samples=100)


@pytest.mark.timeout(300)
def test_banking77_holdout_accuracy(tmp_path: Path) -> None:
    report = _banking77_holdout(tmp_path, FAST)
    assert report["top1_accuracy"] >= 0.885, report
    assert report["accuracy"] >= 0.875, report
    assert report["macro_f1"] >= 0.87, report
    assert report["ece"] <= 0.04, report  # confidences mean what they say


@pytest.mark.timeout(300)
def test_clinc150_in_scope_accuracy_and_oos_recall(tmp_path: Path) -> None:
    report = _clinc150_val(tmp_path, FAST)
    assert report["in_scope_accuracy"] >= 0.90, report
    assert report["oos_recall"] >= 0.60, report
    assert report["ece"] <= 0.04, report


@pytest.mark.timeout(600)
def test_banking77_holdout_accuracy_with_mpnet_context_encoder(tmp_path: Path) -> None:
    """The stock MiniLM encoder (0.918 / 0.906 here) was checked until all-mpnet-base-v2
    (int8, the kind to run) took its place; the worker-crash test still serves a MiniLM
    context model, and CLINC150 below fine-tunes one."""
    report = _banking77_holdout(tmp_path, WITH_MPNET)
    assert report["top1_accuracy"] >= 0.92, report
    assert report["accuracy"] >= 0.905, report
    assert report["ece"] <= 0.04, report


@pytest.mark.timeout(1200)
def test_clinc150_with_fine_tuned_context_encoder(tmp_path: Path) -> None:
    """The stock encoder's CLINC150 figures (0.952 / 0.72) were checked here until the
    fine-tuned one, which costs 8 minutes of the CI run, took its place: Banking77 keeps
    the stock encoder's evaluation."""
    params = dataclasses.replace(WITH_CONTEXT, context_encoder="minilm-tuned",
                                 max_in_scope_loss=0.003)
    report = _clinc150_val(tmp_path, params)
    assert report["in_scope_accuracy"] >= 0.952, report
    assert report["oos_recall"] >= 0.65, report
    assert report["ece"] <= 0.04, report


@pytest.mark.timeout(300)
def test_nlupp_banking_entity_f1_cross_validated() -> None:
    examples = load_examples([_need("nlupp", "banking_dev.jsonl")])
    report = cross_validate(examples, FAST, folds=5, reference_time=datetime(2024, 1, 1))
    assert report["entity_f1"] >= 0.795, report


@pytest.mark.timeout(900)
def test_nlupp_banking_entity_encoder_adds_to_the_tagger(tmp_path: Path) -> None:
    """The first of the 5 folds above (seed 0), with and without the entity encoder (int8,
    the kind to run: the same F1 as fp32 for half the cost): one fine-tuning (about 1.5
    minutes) instead of the five a cross-validation takes. Measured 0.821 against 0.788
    (0.821 in fp32 too); the fold's gain is about the mean gain over the four dealings of
    folds measured (0.802 against 0.772, seeds 0-3), and fine-tuning is not repeatable
    to the bit, so the floors leave room."""
    examples = load_examples([_need("nlupp", "banking_dev.jsonl")])
    held = set(stratified_folds(examples, 5, seed=0)[0])
    train = [e for i, e in enumerate(examples) if i not in held]
    test = [e for i, e in enumerate(examples) if i in held]
    f1 = {}
    for name, params in (("tagger", FAST), ("encoder", WITH_ENTITY_ENCODER)):
        train_model(train, tmp_path / name, params)
        report = evaluate(NLUModel.load(tmp_path / name), test,
                          reference_time=datetime(2024, 1, 1), latency_samples=1)
        f1[name] = report["entity_f1"]
    assert f1["encoder"] >= 0.80, f1
    assert f1["encoder"] >= f1["tagger"] + 0.02, f1
