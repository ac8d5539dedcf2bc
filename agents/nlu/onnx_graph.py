"""ONNX graphs for the trained linear models (training side: needs ``onnx``).

Both models are sparse linear scorers over binary occurrences. For each block
of sparse features (``<block>_row``/``<block>_col``, one entry per occurrence,
optional per-row ``<block>_scale`` of shape [batch, 1]) the graph gathers the
weight rows and sums them per row; the intent model adds the wordllama branch
(lookup, sum, L2 norm, projection) and the calibrated softmax:

.. code-block:: text

    word_col ─Gather(W)─ScatterND(add, word_row)─Mul(word_scale)─┐
    char_col ─Gather(W)─ScatterND(add, char_row)─Mul(char_scale)─Add─┐
    tok_id ─Gather(E)─ScatterND(add, tok_row)─L2 normalise─MatMul(W_emb)─Add─┐
    ctx (optional: a context encoder's sentence vector) ─MatMul(W_ctx)─Add(+b)─> logits
                                                       logits / T ─Softmax─> probs
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OPSET", "build_linear_model"]

OPSET = 18
_IR_VERSION = 9  # read by every onnxruntime >= 1.18


def _const(name: str, array: npt.NDArray[np.generic]) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _zeros(shape_name: str, out: str) -> onnx.NodeProto:
    return helper.make_node(
        "ConstantOfShape", [shape_name], [out],
        value=numpy_helper.from_array(np.zeros(1, np.float32)),
    )


def build_linear_model(
    weights: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    *,
    blocks: Sequence[tuple[str, bool]] = (("feat", False),),
    temperature: float = 1.0,
    embedding: npt.NDArray[np.float16] | None = None,
    embedding_weights: npt.NDArray[np.float32] | None = None,
    context_weights: npt.NDArray[np.float32] | None = None,
    name: str = "parley_nlu",
) -> onnx.ModelProto:
    """Build ``logits = Σ_blocks scale·Σ W[col] + pool(E[tok])·W_emb + ctx·W_ctx + b``
    and ``probs``.

    ``weights`` is (n_features, n_classes), shared by all blocks; ``blocks`` names
    each block and says whether it has a per-row scale input. With
    ``context_weights`` (dim, n_classes) the graph takes a ``ctx`` input (batch, dim):
    a sentence vector computed outside it (the context encoder).
    """
    n_classes = int(bias.shape[0])
    inits = [
        _const("W", weights.astype(np.float32)),
        _const("b", bias.astype(np.float32)),
        _const("axis1", np.array([1], np.int64)),
        _const("n_classes", np.array([n_classes], np.int64)),
        _const("inv_t", np.array(1.0 / temperature, np.float32)),
    ]
    inputs = [helper.make_tensor_value_info("batch_size", TensorProto.INT64, [1])]
    nodes = [
        helper.make_node("Concat", ["batch_size", "n_classes"], ["out_shape"], axis=0),
        _zeros("out_shape", "zeros"),
    ]
    partial: list[str] = []
    for block, scaled in blocks:
        inputs += [
            helper.make_tensor_value_info(f"{block}_row", TensorProto.INT64, [f"n_{block}"]),
            helper.make_tensor_value_info(f"{block}_col", TensorProto.INT64, [f"n_{block}"]),
        ]
        nodes += [
            helper.make_node("Gather", ["W", f"{block}_col"], [f"{block}_w"], axis=0),
            helper.make_node("Unsqueeze", [f"{block}_row", "axis1"], [f"{block}_idx"]),
            helper.make_node("ScatterND", ["zeros", f"{block}_idx", f"{block}_w"],
                             [f"{block}_sum"], reduction="add"),
        ]
        out = f"{block}_sum"
        if scaled:
            inputs.append(
                helper.make_tensor_value_info(f"{block}_scale", TensorProto.FLOAT, ["batch", 1])
            )
            nodes.append(helper.make_node("Mul", [out, f"{block}_scale"], [f"{block}_scores"]))
            out = f"{block}_scores"
        partial.append(out)
    if embedding is not None and embedding_weights is not None:
        dim = int(embedding.shape[1])
        inputs += [
            helper.make_tensor_value_info("tok_row", TensorProto.INT64, ["n_tok"]),
            helper.make_tensor_value_info("tok_id", TensorProto.INT64, ["n_tok"]),
        ]
        inits += [
            _const("E", embedding.astype(np.float16)),
            _const("W_emb", embedding_weights.astype(np.float32)),
            _const("emb_dim", np.array([dim], np.int64)),
            _const("eps", np.array(1e-12, np.float32)),
        ]
        nodes += [
            helper.make_node("Gather", ["E", "tok_id"], ["tok_vec16"], axis=0),
            helper.make_node("Cast", ["tok_vec16"], ["tok_vec"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["tok_row", "axis1"], ["tok_idx"]),
            helper.make_node("Concat", ["batch_size", "emb_dim"], ["emb_shape"], axis=0),
            _zeros("emb_shape", "emb_zeros"),
            helper.make_node("ScatterND", ["emb_zeros", "tok_idx", "tok_vec"], ["emb_sum"],
                             reduction="add"),
            helper.make_node("ReduceL2", ["emb_sum", "axis1"], ["emb_norm"], keepdims=1),
            helper.make_node("Max", ["emb_norm", "eps"], ["emb_norm_safe"]),
            helper.make_node("Div", ["emb_sum", "emb_norm_safe"], ["emb"]),
            helper.make_node("MatMul", ["emb", "W_emb"], ["emb_scores"]),
        ]
        partial.append("emb_scores")
    if context_weights is not None:
        inputs.append(helper.make_tensor_value_info(
            "ctx", TensorProto.FLOAT, ["batch", int(context_weights.shape[0])]
        ))
        inits.append(_const("W_ctx", context_weights.astype(np.float32)))
        nodes.append(helper.make_node("MatMul", ["ctx", "W_ctx"], ["ctx_scores"]))
        partial.append("ctx_scores")
    total = partial[0]
    for i, other in enumerate(partial[1:]):
        nodes.append(helper.make_node("Add", [total, other], [f"sum_{i}"]))
        total = f"sum_{i}"
    nodes += [
        helper.make_node("Add", [total, "b"], ["logits"]),
        helper.make_node("Mul", ["logits", "inv_t"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=1),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes]),
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_classes]),
    ]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=_IR_VERSION,
        producer_name="parley",
    )
    onnx.checker.check_model(model)
    return model
