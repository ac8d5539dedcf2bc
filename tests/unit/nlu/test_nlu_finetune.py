"""The fine-tuned context encoder (``--context-encoder minilm-tuned``): MiniLM trained
further on the intents with PyTorch, then run by onnxruntime like the stock one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from agents.encoders.embedder import (
    Embedder,
    build_embedder,
    minilm_checkpoint,
    pad_ids,
)
from agents.nlu.cli import nlu
from agents.nlu.data import load_examples
from agents.nlu.model import NLUModel
from agents.nlu.train import TrainingParams, train_model
from examples import DEMO
from tests.unit.nlu.cases import CLEAR_INTENTS, modules_loaded_by_inference, write_demo_slice
from tests.unit.wheels import needs_minilm

torch = pytest.importorskip("torch", reason="fine-tuning needs PyTorch: pip install 'parley[tune]'")

from agents.nlu.finetune import TuningParams, encoder_module, fine_tune_encoder  # noqa: E402

TEXTS = ["hello there", "I lost my credit card yesterday", "where is my order AB-123456",
         "a much longer message about moving money between two of my accounts, tomorrow", "ok"]

# Minutes of fine-tuning on 2 cores, more on a busy machine: the module fixture is timed
# with the first test that uses it.
pytestmark = [needs_minilm, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stock_encoder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return Embedder(build_embedder("minilm", tmp_path_factory.mktemp("stock") / "enc"))


@pytest.fixture(scope="module")
def tuned_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domain with a fine-tuned context encoder consulted for every message."""
    out = tmp_path_factory.mktemp("nlu-tuned") / "model"
    params = TrainingParams(refit=False, context_encoder="minilm-tuned", context_tune_epochs=2,
                            context_route_below=1.0)
    train_model(load_examples([DEMO.nlu]), out, params)
    return out


def _torch_vectors(weights: dict[str, np.ndarray], config: dict[str, object],
                   encoder: Embedder) -> np.ndarray:
    module = encoder_module(weights, config).eval()
    ids, mask = map(torch.from_numpy, pad_ids(encoder._ids(TEXTS, 256)))
    with torch.no_grad():
        return np.asarray(module(ids, mask).numpy())


def test_the_torch_twin_computes_what_the_onnx_encoder_computes(stock_encoder: Embedder) -> None:
    weights, config, _ = minilm_checkpoint()
    expected = stock_encoder.embed(TEXTS)  # padded batches of mixed lengths
    np.testing.assert_allclose(_torch_vectors(weights, config, stock_encoder), expected,
                               atol=2e-5)


def _separation(vectors: np.ndarray, labels: list[str]) -> float:
    """Mean over examples of (cosine to their intent's centroid minus to the best other one's)."""
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    centroids = np.stack([vectors[y == k].mean(axis=0) for k in range(len(names))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    sims = vectors @ centroids.T
    own = sims[np.arange(len(y)), y]
    sims[np.arange(len(y)), y] = -np.inf
    return float(np.mean(own - sims.max(axis=1)))


def test_tuned_encoder_is_exported_and_separates_intents_better(
    tuned_model_dir: Path, stock_encoder: Embedder
) -> None:
    meta = json.loads((tuned_model_dir / "context" / "embedder.json").read_text())
    assert meta["kind"] == "minilm-tuned" and "fine-tuned on" in meta["source"]
    manifest = json.loads((tuned_model_dir / "manifest.json").read_text())
    assert manifest["context"]["encoder"] == "minilm-tuned"
    assert manifest["training"]["context_tune_epochs"] == 2

    examples = [e for e in load_examples([DEMO.nlu]) if e.intent]
    texts, labels = [e.text for e in examples], [str(e.intent) for e in examples]
    tuned = Embedder(tuned_model_dir / "context")
    assert _separation(tuned.embed(texts), labels) > _separation(stock_encoder.embed(texts),
                                                                 labels) + 0.01


@pytest.mark.parametrize(("text", "intent"), CLEAR_INTENTS)
def test_tuned_context_model_separates_clearly_different_intents(
    tuned_model_dir: Path, text: str, intent: str
) -> None:
    u = NLUModel.load(tuned_model_dir).understand(text)
    assert (u.intent, u.oos) == (intent, intent == "oos")


def test_fine_tuning_moves_the_weights_it_exports() -> None:
    weights, config, tokenizer_file = minilm_checkpoint()
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = [e.ids for e in tokenizer.encode_batch(TEXTS[:4] * 4)]
    reports: list[str] = []
    tuned = fine_tune_encoder(weights, config, ids, np.array([0, 1, 2, 3] * 4),
                              TuningParams(epochs=1, batch_size=4), report=reports.append)
    assert set(tuned) == {k for k, v in weights.items() if v.dtype.kind == "f"}
    moved = [k for k in tuned if not np.array_equal(tuned[k], weights[k])]
    assert "encoder.layer.5.output.dense.weight" in moved and len(moved) > 90


def test_inference_with_a_tuned_model_does_not_import_torch(tuned_model_dir: Path) -> None:
    loaded = modules_loaded_by_inference(
        tuned_model_dir, "m.understand_batch(['hi', 'my card is gone'])",
        {"sklearn", "torch", "onnx", "wordllama"}, timeout=120,
    )
    assert loaded == []


def test_cli_trains_a_tuned_quantised_model(tmp_path: Path) -> None:
    """Through the CLI, the int8 kind (``tuned_model_dir`` above covers fp32)."""
    out = tmp_path / "model"
    result = CliRunner().invoke(nlu, [
        "train", "--data", str(write_demo_slice(tmp_path / "slice.jsonl")), "--out", str(out),
        "--context-encoder", "minilm-tuned-int8", "--context-route-below", "1.0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    context = json.loads((out / "manifest.json").read_text())["context"]
    assert (context["encoder"], context["route_below"]) == ("minilm-tuned-int8", 1.0)
    assert json.loads((out / "context" / "embedder.json").read_text())["kind"] == (
        "minilm-tuned-int8")
    graph = onnx.load(str(out / "context" / "model.onnx")).graph
    assert any(node.op_type == "MatMulInteger" for node in graph.node)
    assert NLUModel.load(out).understand("I lost my credit card").intent == "card_lost"
