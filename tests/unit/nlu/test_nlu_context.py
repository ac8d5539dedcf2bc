"""The context encoder: a second intent model on MiniLM sentence vectors, consulted
for the messages the first model is unsure of."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.nlu.data import load_examples
from agents.nlu.model import NLUModel
from agents.nlu.train import TrainingParams, train_model
from examples import DEMO
from tests.unit.nlu.cases import CLEAR_INTENTS, modules_loaded_by_inference
from tests.unit.wheels import needs_minilm

pytestmark = needs_minilm


@pytest.fixture(scope="module")
def context_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domain with a context encoder consulted for every message."""
    out = tmp_path_factory.mktemp("nlu-context") / "model"
    params = TrainingParams(refit=False, context_encoder="minilm", context_route_below=1.0)
    train_model(load_examples([DEMO.nlu]), out, params)
    return out


def _with_route_below(model_dir: Path, route_below: float, out: Path) -> Path:
    shutil.copytree(model_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["context"]["route_below"] = route_below
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


class _CountingEncoder:
    def __init__(self, model: NLUModel) -> None:
        assert model._context is not None
        self.inner = model._context.encoder
        self.texts: list[str] = []
        model._context.encoder = self  # type: ignore[assignment]

    def embed(self, texts: Sequence[str], **kwargs: Any) -> Any:
        self.texts += texts
        return self.inner.embed(texts, **kwargs)


def test_training_writes_the_context_model_and_its_settings(context_model_dir: Path) -> None:
    manifest = json.loads((context_model_dir / "manifest.json").read_text())
    context = manifest["context"]
    assert context["encoder"] == "minilm" and context["route_below"] == 1.0
    assert 0 < context["temperature"] and 0 <= context["oos_threshold"] < 1
    assert 0.0 <= manifest["validation"]["accuracy_with_context"] <= 1.0
    for name in ("intent_context.onnx", "context/model.onnx", "context/tokenizer.json",
                 "context/embedder.json"):
        assert (context_model_dir / name).is_file(), name


@pytest.mark.parametrize(
    ("text", "intent"),
    CLEAR_INTENTS,
)
def test_context_model_separates_clearly_different_intents(
    context_model_dir: Path, text: str, intent: str
) -> None:
    model = NLUModel.load(context_model_dir)
    encoder = _CountingEncoder(model)
    u = model.understand(text)
    assert (u.intent, u.oos) == (intent, intent == "oos")
    assert encoder.texts == [text]  # route_below 1.0: every message consults it
    confidences = [c for _, c in u.ranking]
    assert confidences == sorted(confidences, reverse=True) and 0 < confidences[0] <= 1


def test_only_unsure_messages_consult_the_encoder(context_model_dir: Path, tmp_path: Path) -> None:
    texts = ["hello there", "I lost my credit card", "hmm maybe the thing with the stuff",
             "", "where is my order AB-123456", "card"]
    never = NLUModel.load(_with_route_below(context_model_dir, 0.0, tmp_path / "never"))
    encoder = _CountingEncoder(never)
    fast = never.understand_batch(texts)
    assert encoder.texts == []

    route_below = 0.99  # between the sure ones (0.999+) and the vague ones (0.92-0.97)
    model = NLUModel.load(_with_route_below(context_model_dir, route_below, tmp_path / "some"))
    encoder = _CountingEncoder(model)
    mixed = model.understand_batch(texts)
    live = [t for t in texts if t]
    confidence = model.intent_probabilities(live).max(axis=1)
    unsure = [t for t, c in zip(live, confidence, strict=True) if c < route_below]
    assert encoder.texts == unsure and 0 < len(unsure) < len(live)
    for text, a, b in zip(texts, fast, mixed, strict=True):
        if text not in unsure:  # the first model's answer, untouched
            assert a == b
    assert mixed[texts.index("")].oos and not np.isnan(mixed[0].confidence)


def test_inference_with_a_context_model_does_not_import_sklearn(
    context_model_dir: Path,
) -> None:
    loaded = modules_loaded_by_inference(
        context_model_dir, "m.understand_batch(['hi', 'my card is gone'])",
        {"sklearn", "scipy", "skl2onnx", "onnx", "wordllama", "joblib", "torch"}, timeout=120,
    )
    assert loaded == []
