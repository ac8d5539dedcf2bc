"""Fine-tuning all-MiniLM-L6-v2 for the NLU (PyTorch, training only).

* :func:`fine_tune_encoder`, ``parley nlu train --context-encoder minilm-tuned``:
  trains MiniLM further, end to end, to tell the training examples' intents
  apart: its mean-pooled, L2-normalised sentence vector feeds a cosine
  classifier (logits: 20 times the cosine with one learnt vector per intent),
  trained with cross-entropy (label smoothing 0.1), AdamW (encoder 5e-5,
  classifier 2e-3). The classifier is thrown away; the tuned weights go into
  the same ONNX graph as the stock encoder
  (:func:`agents.encoders.onnx_graphs.bert_encoder_graph`), so inference is
  unchanged: onnxruntime, no PyTorch.
* :func:`fine_tune_token_scorer`, ``--entity-encoder minilm-tuned``: MiniLM and a
  linear head on its token states, trained to tag words (each at its first
  wordpiece) with the entity tagger's BIO tags; exported whole, head included
  (:func:`agents.encoders.onnx_graphs.bert_token_graph`, used by
  :mod:`agents.nlu.entity_encoder`).

Both train with AdamW, linear warm-up and decay, in batches of similar lengths,
with the word-embedding table frozen. :class:`_Bert` computes what the ONNX
graphs compute, op for op (``tests/unit/nlu/test_nlu_finetune.py`` and
``test_nlu_entity_encoder.py`` check both give the same numbers).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.encoders.embedder import pad_ids, truncate_ids
from kernel.extras import require

__all__ = ["TORCH_HINT", "TuningParams", "fine_tune_encoder", "fine_tune_token_scorer",
           "require_torch"]

log = logging.getLogger(__name__)

TORCH_HINT = ("PyPI's Linux wheel brings about 2.7 GB of CUDA libraries; the CPU "
              "build is a few hundred MB: pip install torch --index-url "
              "https://download.pytorch.org/whl/cpu; in a checkout: make install-tune")
"""How to get PyTorch, for the error a fine-tuning command gives without it."""


@dataclass(frozen=True)
class TuningParams:
    """How the encoder is fine-tuned (chosen on the Banking77 and CLINC150 dev splits)."""

    epochs: int = 3
    batch_size: int = 32
    encoder_lr: float = 5e-5
    head_lr: float = 2e-3
    max_tokens: int = 64
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_tokens < 3:
            raise ValueError("epochs, batch_size and max_tokens must be positive")


def require_torch() -> Any:
    """The ``torch`` module, or :class:`~kernel.extras.MissingExtra` naming the ``tune``
    extra: fine-tuning is the only use of PyTorch, which the install leaves out."""
    return require("torch", extra="tune", purpose="fine-tuning a MiniLM encoder (minilm-tuned)",
                   hint=TORCH_HINT)


def _bert_module(torch: Any) -> Any:
    nn, functional = torch.nn, torch.nn.functional

    class _Bert(nn.Module):  # type: ignore[name-defined]
        """BERT encoder + masked mean pool + L2 norm, from Hugging Face weight names."""

        def __init__(self, weights: Mapping[str, npt.NDArray[Any]], layers: int, heads: int,
                     eps: float) -> None:
            super().__init__()
            # ParameterDict keys may not hold dots.
            self.weights = nn.ParameterDict({
                name.replace(".", "/"): nn.Parameter(torch.tensor(np.asarray(value, np.float32)))
                for name, value in weights.items() if np.asarray(value).dtype.kind == "f"
            })  # fmt: skip
            self.layers, self.heads, self.eps = layers, heads, eps

        def w(self, name: str) -> Any:
            return self.weights[name.replace(".", "/")]

        def forward(self, ids: Any, mask: Any) -> Any:
            """L2-normalised mean of the last layer's token states: ``[B,T] → [B,H]``."""
            x = self.hidden(ids, mask)
            m = mask[:, :, None].float()
            mean = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
            return functional.normalize(mean, dim=-1, eps=1e-12)

        def hidden(self, ids: Any, mask: Any) -> Any:
            """The last layer's token states: ``[B,T] → [B,T,H]``."""
            batch, tokens = ids.shape
            hidden = self.w("embeddings.word_embeddings.weight").shape[1]
            head_dim = hidden // self.heads

            def norm(x: Any, prefix: str) -> Any:
                return functional.layer_norm(x, (hidden,), self.w(prefix + ".weight"),
                                             self.w(prefix + ".bias"), self.eps)

            def dense(x: Any, prefix: str) -> Any:
                return functional.linear(x, self.w(prefix + ".weight"), self.w(prefix + ".bias"))

            def split(x: Any) -> Any:
                return x.view(batch, tokens, self.heads, head_dim).transpose(1, 2)

            x = (self.w("embeddings.word_embeddings.weight")[ids]
                 + self.w("embeddings.position_embeddings.weight")[:tokens]
                 + self.w("embeddings.token_type_embeddings.weight")[0])
            x = norm(x, "embeddings.LayerNorm")
            bias = (1.0 - mask[:, None, None, :].float()) * -1e4
            for i in range(self.layers):
                p = f"encoder.layer.{i}"
                q = split(dense(x, f"{p}.attention.self.query")) / math.sqrt(head_dim)
                k = split(dense(x, f"{p}.attention.self.key"))
                v = split(dense(x, f"{p}.attention.self.value"))
                attention = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1) @ v
                attention = attention.transpose(1, 2).reshape(batch, tokens, hidden)
                x = norm(dense(attention, f"{p}.attention.output.dense") + x,
                         f"{p}.attention.output.LayerNorm")
                h = functional.gelu(dense(x, f"{p}.intermediate.dense"))  # exact (erf) GELU
                x = norm(dense(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
            return x

        def state(self) -> dict[str, npt.NDArray[np.float32]]:
            return {name.replace("/", "."): p.detach().numpy().copy()
                    for name, p in self.weights.items()}

    return _Bert


def encoder_module(weights: Mapping[str, npt.NDArray[Any]], config: Mapping[str, Any]) -> Any:
    """The PyTorch twin of the ONNX encoder for ``weights`` (a ``torch.nn.Module``:
    ``(input_ids, attention_mask) → L2-normalised vectors``)."""
    torch = require_torch()
    return _bert_module(torch)(
        weights, int(config["num_hidden_layers"]), int(config["num_attention_heads"]),
        float(config.get("layer_norm_eps", 1e-12)),
    )


def fine_tune_encoder(
    weights: Mapping[str, npt.NDArray[Any]], config: Mapping[str, Any],
    token_ids: Sequence[Sequence[int]], labels: npt.NDArray[np.int64],
    params: TuningParams | None = None, report: Callable[[str], None] | None = None,
) -> dict[str, npt.NDArray[np.float32]]:
    """The encoder's weights after training it to separate ``labels``.

    ``token_ids`` are the examples' wordpiece ids with special tokens, as the
    encoder's tokenizer gives them (cut to ``params.max_tokens`` here). ``report``
    hears the progress (``epoch 2/3 41%``) a few times an epoch.
    """
    torch = require_torch()
    params = params or TuningParams()
    functional = torch.nn.functional
    y = torch.tensor(np.asarray(labels, np.int64))

    def loss(model: Any, head: Any, ids: Any, mask: Any, batch: list[int]) -> Any:
        logits = 20.0 * functional.linear(
            model(ids, mask), functional.normalize(head.weight, dim=-1)
        )
        return functional.cross_entropy(logits, y[batch], label_smoothing=0.1)

    model, _ = _train(
        torch, weights, config, token_ids, int(labels.max()) + 1, loss, params, report,
        head_bias=False,
    )
    return dict(model.state())


def fine_tune_token_scorer(
    weights: Mapping[str, npt.NDArray[Any]], config: Mapping[str, Any],
    token_ids: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]], n_labels: int,
    params: TuningParams | None = None, report: Callable[[str], None] | None = None,
) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The encoder's weights and a linear head on its tokens (``[n_labels, hidden]``
    weight, bias) after training them to give wordpiece ``positions[i][k]`` of example
    ``i`` the label ``labels[i][k]`` (cross-entropy; dropout 0.1 on the token states).

    ``token_ids`` are as for :func:`fine_tune_encoder`; positions past
    ``params.max_tokens`` are cut with the tokens.
    """
    torch = require_torch()
    params = params or TuningParams()
    functional = torch.nn.functional
    limit = params.max_tokens - 1  # the closing special token takes the last place
    kept = [[(p, y) for p, y in zip(pos, ys, strict=True) if p < limit]
            for pos, ys in zip(positions, labels, strict=True)]

    def loss(model: Any, head: Any, ids: Any, mask: Any, batch: list[int]) -> Any:
        pairs = [(row, p, y) for row, i in enumerate(batch) for p, y in kept[i]]
        if not pairs:
            return None
        rows, at, y = (torch.tensor(column) for column in zip(*pairs, strict=True))
        states = functional.dropout(model.hidden(ids, mask), 0.1, training=True)
        return functional.cross_entropy(head(states[rows, at]), y)

    model, head = _train(torch, weights, config, token_ids, n_labels, loss, params, report,
                         head_bias=True)
    return (dict(model.state()), head.weight.detach().numpy().copy(),
            head.bias.detach().numpy().copy())


def _train(
    torch: Any, weights: Mapping[str, npt.NDArray[Any]], config: Mapping[str, Any],
    token_ids: Sequence[Sequence[int]], n_labels: int,
    loss: Callable[[Any, Any, Any, Any, list[int]], Any], params: TuningParams,
    report: Callable[[str], None] | None, *, head_bias: bool,
) -> tuple[Any, Any]:
    """Train the encoder and a linear head (``hidden → n_labels``) to lower ``loss``
    (``(model, head, ids, mask, batch) → loss``, or None for a batch with nothing to
    learn): AdamW, linear warm-up and decay, batches of similar lengths."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    try:
        model = encoder_module(weights, config)
        # The word-embedding table (half the weights) stays as it is: training it made
        # no difference on Banking77 (head accuracy 92.50 against 92.45 %) and its
        # dense gradient and optimiser update cost an eighth of the time.
        model.w("embeddings.word_embeddings.weight").requires_grad_(False)
        head = torch.nn.Linear(model.w("embeddings.word_embeddings.weight").shape[1], n_labels,
                               bias=head_bias)
        rows = [truncate_ids(ids, params.max_tokens) for ids in token_ids]
        optimiser = torch.optim.AdamW([
            {"params": [p for p in model.parameters() if p.requires_grad],
             "lr": params.encoder_lr},
            {"params": head.parameters(), "lr": params.head_lr},
        ], weight_decay=0.01)  # fmt: skip
        per_epoch = math.ceil(len(rows) / params.batch_size)
        total = params.epochs * per_epoch
        warmup = max(1, int(0.06 * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: min(1.0, step / warmup) * max(0.0, (total - step) / total)
        )
        model.train()
        for epoch in range(params.epochs):
            batches = _length_bucketed(rows, params.batch_size, params.seed + epoch)
            loss_sum = 0.0
            for n, batch in enumerate(batches, 1):
                ids, mask = map(torch.from_numpy, pad_ids([rows[i] for i in batch]))
                value = loss(model, head, ids, mask, batch)
                if value is not None:
                    optimiser.zero_grad()
                    value.backward()
                    optimiser.step()
                    loss_sum += float(value.item())
                schedule.step()
                if report is not None and (n == 1 or n % 20 == 0):
                    report(f"fine-tune epoch {epoch + 1}/{params.epochs} {n / per_epoch:.0%}")
            log.info("nlu.finetune.epoch epoch=%d loss=%.3f", epoch + 1, loss_sum / len(batches))
        model.eval()
        return model, head
    finally:
        torch.set_num_threads(previous_threads)


def _length_bucketed(rows: Sequence[Sequence[int]], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of examples of similar length (little padding): chunks of 50
    batches are sorted by length, cut into batches, and the batches shuffled."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    chunk = 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(rows[i]))
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches
