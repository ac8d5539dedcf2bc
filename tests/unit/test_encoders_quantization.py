"""int8 MiniLM (``minilm-int8``, ``minilm-tuned-int8``): half the cost, the same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from agents.encoders.embedder import Embedder, build_embedder, minilm_checkpoint
from tests.unit.wheels import needs_minilm

pytestmark = [needs_minilm, pytest.mark.slow]  # builds and quantises MiniLM twice (~15 s)

TEXTS = ["hello there", "I lost my credit card yesterday", "where is my order AB-123456",
         "a much longer message about moving money between two of my accounts, tomorrow",
         "ok", "why was my transfer declined?", "🙂"]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedder("minilm", tmp_path_factory.mktemp("fp32") / "enc")


def _int8_matmuls(folder: Path) -> int:
    graph = onnx.load(str(folder / "model.onnx")).graph
    return sum(node.op_type == "MatMulInteger" for node in graph.node)


def test_int8_vectors_stay_close_to_the_fp32_ones(fp32: Path, tmp_path: Path) -> None:
    int8 = build_embedder("minilm-int8", tmp_path / "enc")
    assert json.loads((int8 / "embedder.json").read_text())["kind"] == "minilm-int8"
    assert _int8_matmuls(int8) >= 36  # six layers of q, k, v, output and two feed-forward
    assert (int8 / "model.onnx").stat().st_size < 0.3 * (fp32 / "model.onnx").stat().st_size
    cosines = (Embedder(fp32).embed(TEXTS) * Embedder(int8).embed(TEXTS)).sum(axis=1)
    # one scale per output channel; one scale per whole matrix gave 0.87-0.97 here
    assert cosines.min() >= 0.95 and cosines.mean() >= 0.98, cosines


def test_fine_tuned_weights_can_be_quantised(fp32: Path, tmp_path: Path) -> None:
    weights = minilm_checkpoint()[0]
    int8 = build_embedder("minilm-int8", tmp_path / "enc", weights=weights, tuned_on="a test")
    meta = json.loads((int8 / "embedder.json").read_text())
    assert meta["kind"] == "minilm-tuned-int8" and "fine-tuned on a test" in meta["source"]
    assert _int8_matmuls(int8) >= 36
    cosines = (Embedder(fp32).embed(TEXTS) * Embedder(int8).embed(TEXTS)).sum(axis=1)
    assert cosines.min() >= 0.95, cosines
    with pytest.raises(ValueError, match="minilm"):
        build_embedder("wordllama", tmp_path / "other", weights=weights)
