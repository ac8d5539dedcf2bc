"""Training: JSON-lines examples → a model folder (ONNX + manifest).

Needs the ``train`` extra (scikit-learn, onnx, wordllama). Steps:

1. hold out a stratified validation split (``validation_fraction``);
2. fit the n-gram vocabulary and a linear SVM on word/char TF-IDF + the
   wordllama mean embedding, on the remaining examples;
3. fit the softmax temperature and the out-of-scope threshold on the split;
4. refit on all examples with those settings and export ``intent.onnx``
   (with a context encoder, steps 2 to 4 also fit ``intent_context.onnx`` on the
   same n-grams plus the messages' MiniLM or MPNet sentence vectors;
   ``minilm-tuned`` fine-tunes MiniLM on the training split before step 2);
5. train the BIO entity tagger on the examples that carry entity annotations,
   then its span refinement models (boundaries and types, see
   :mod:`agents.nlu.spans`); with ``entity_encoder``, also fine-tune MiniLM on
   the same tags (:mod:`agents.nlu.entity_encoder`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agents.encoders.embedder import Embedder, build_embedder, minilm_checkpoint, plain_tokenizer
from agents.encoders.wordllama import TokenEncoder, load_wordllama, mean_pool, wordllama_files
from agents.nlu import finetune
from agents.nlu.calibration import decide, fit_oos_threshold, fit_temperature, softmax
from agents.nlu.data import Example, canonical_lines, load_examples
from agents.nlu.entity_encoder import ENTITY_ENCODERS, build_entity_encoder
from agents.nlu.features import NgramVocabulary
from agents.nlu.manifest import Manifest, hash_training_data
from agents.nlu.recognisers import RecogniserConfig, Recognisers
from agents.nlu.span_training import AnnotatedMessage, fit_span_models
from agents.nlu.spans import SpanModels
from agents.nlu.tagger import encode_bio, token_features
from agents.nlu.text import MAX_TEXT_CHARS, Token, clean_text, tokenize
from kernel.extras import MissingExtra, require
from kernel.files import atomic_directory

__all__ = [
    "CODE_VERSION", "CONTEXT_ENCODERS", "TrainingParams", "train_model", "train_model_from_files",
]

CODE_VERSION = "nlu-train-4"
"""Bump when training changes what a model folder contains (invalidates caches)."""

log = logging.getLogger(__name__)

_EMB_WEIGHT = 2.0
CONTEXT_ENCODERS = (None, "minilm", "minilm-int8", "minilm-tuned", "minilm-tuned-int8",
                    "mpnet", "mpnet-int8")
CONTEXT_FILES = {
    "context_encoder": "context/embedder.json",
    "context_encoder_model": "context/model.onnx",
    "context_encoder_tokenizer": "context/tokenizer.json",
}
"""The context encoder's folder (an :class:`agents.encoders.embedder.Embedder`)."""
ENTITY_ENCODER_FILES = {
    "entity_encoder": "entities/entity_encoder.json",
    "entity_encoder_model": "entities/model.onnx",
    "entity_encoder_tokenizer": "entities/tokenizer.json",
}
"""The entity encoder's folder (an :class:`agents.nlu.entity_encoder.EntityEncoder`)."""
_JOBS = max(1, min(4, os.cpu_count() or 1))
# Reference time for recogniser features in training (only spans matter, not values).
_TRAIN_REFERENCE = datetime(2024, 1, 1, 12, 0)


@dataclass(frozen=True)
class TrainingParams:
    """Knobs of ``parley nlu train``.

    ``context_encoder`` adds a second intent model over the n-grams and a sentence
    transformer's vector of the message (all-MiniLM-L6-v2, or with ``mpnet`` the
    larger all-mpnet-base-v2: see :mod:`agents.encoders.embedder`), weighted by
    ``context_weight``. Inference consults it only for the messages the first model
    is unsure of (top probability under ``context_route_below``), so most messages
    cost what they did.
    ``minilm-tuned`` first fine-tunes the encoder on the training split's intents
    (``context_tune_epochs``, PyTorch at training time only: :mod:`agents.nlu.finetune`);
    the ``-int8`` kinds quantise the encoder (half the cost, the same accuracy).
    """

    oos_label: str = "oos"
    c: float = 1.0
    validation_fraction: float = 0.15
    max_in_scope_loss: float = 0.01
    char_range: tuple[int, int] = (2, 5)
    use_embeddings: bool = True
    tagger_c: float = 1.0
    seed: int = 0
    refit: bool = True  # False: keep the model fitted without the validation split (2x faster)
    refine_spans: bool = True  # learn boundary and type models over the tagger's spans
    context_encoder: str | None = None  # one of CONTEXT_ENCODERS
    context_weight: float = 2.0
    context_route_below: float = 0.9
    context_tune_epochs: int = 3
    entity_encoder: str | None = None  # one of ENTITY_ENCODERS: see agents.nlu.entity_encoder
    entity_tune_epochs: int = 10
    recognisers: RecogniserConfig = field(default_factory=RecogniserConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ValueError("validation_fraction must be in [0, 0.5)")
        if self.c <= 0 or self.tagger_c <= 0:
            raise ValueError("C must be positive")
        if not self.oos_label:
            raise ValueError("oos_label must not be empty")
        if self.context_encoder not in CONTEXT_ENCODERS:
            raise ValueError(f"context_encoder must be one of {CONTEXT_ENCODERS}")
        if not 0.0 < self.context_route_below <= 1.0:
            raise ValueError("context_route_below must be in (0, 1]")
        if self.context_tune_epochs < 1:
            raise ValueError("context_tune_epochs must be at least 1")
        if self.entity_encoder not in ENTITY_ENCODERS:
            raise ValueError(f"entity_encoder must be one of {ENTITY_ENCODERS}")
        if self.entity_tune_epochs < 1:
            raise ValueError("entity_tune_epochs must be at least 1")

    @property
    def tunes_context_encoder(self) -> bool:
        """Whether training fine-tunes MiniLM for the context encoder."""
        return (self.context_encoder or "").startswith("minilm-tuned")

    def describe(self) -> dict[str, Any]:
        return {
            "oos_label": self.oos_label,
            "c": self.c,
            "validation_fraction": self.validation_fraction,
            "max_in_scope_loss": self.max_in_scope_loss,
            "char_range": list(self.char_range),
            "use_embeddings": self.use_embeddings,
            "tagger_c": self.tagger_c,
            "seed": self.seed,
            "refit": self.refit,
            "refine_spans": self.refine_spans,
            "context_encoder": self.context_encoder,
            "context_weight": self.context_weight,
            "context_route_below": self.context_route_below,
            **({"context_tune_epochs": self.context_tune_epochs}
               if self.tunes_context_encoder else {}),
            **({"entity_encoder": self.entity_encoder,
                "entity_tune_epochs": self.entity_tune_epochs} if self.entity_encoder else {}),
        }


class Progress(Protocol):
    """Names the step that starts; ``advance=False`` only updates what the bar says."""

    def __call__(self, step: str, *, advance: bool = True) -> None: ...


ContextFactory = Callable[[Sequence[str], "npt.NDArray[np.int64]"], "Embedder"]
"""Builds the context encoder, given the training split's texts and intent indices."""
EntityEncoderFactory = Callable[[Sequence[str], Sequence[Sequence[Token]], Sequence[Sequence[int]],
                                Sequence[str]], None]
"""Writes the entity encoder for texts, their tokens, the tokens' tag ids and the tags."""


def _stratified_split(
    labels: Sequence[str], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    train: list[int] = []
    valid: list[int] = []
    for idx in by_label.values():
        perm = rng.permutation(idx).tolist()
        k = round(len(perm) * fraction) if len(perm) >= 3 else 0
        valid += perm[:k]
        train += perm[k:]
    return np.array(sorted(train), np.int64), np.array(sorted(valid), np.int64)


@dataclass
class _IntentFeaturizer:
    vocab: NgramVocabulary
    encoder: Any
    embedding: npt.NDArray[np.float16] | None

    @property
    def ngram_columns(self) -> int:
        """How many of :meth:`matrix`'s columns are n-grams (the wordllama vector follows)."""
        return max(self.vocab.n_features, 1)

    def matrix(self, texts: Sequence[str]) -> Any:
        from scipy.sparse import csr_matrix, hstack

        rows, cols, values = self.vocab.transform(texts).csr_parts(self.vocab.idf)
        sparse = csr_matrix(
            (values, (rows, cols)),
            shape=(len(texts), self.ngram_columns),
            dtype=np.float32,
        )
        if self.embedding is None:
            return sparse
        tokens = self.encoder.encode(texts)
        emb = mean_pool(self.embedding, tokens, len(texts)) * _EMB_WEIGHT
        return hstack([sparse, csr_matrix(emb)], format="csr")


def _fit_svm(
    x: Any, y: npt.NDArray[np.int64], n_classes: int, c: float, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """One-vs-rest linear SVMs, one class per thread (liblinear releases the GIL)."""
    from joblib import parallel_config
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    model = OneVsRestClassifier(LinearSVC(C=c, random_state=seed, max_iter=5000), n_jobs=_JOBS)
    with parallel_config(backend="threading"):
        model.fit(x, y)
    coef = np.vstack([e.coef_ for e in model.estimators_]).astype(np.float32)
    bias = np.concatenate([e.intercept_ for e in model.estimators_]).astype(np.float32)
    if n_classes == 2:  # binary: one hyperplane → two symmetric scores
        coef = (np.vstack([-coef, coef]) / 2).astype(np.float32)
        bias = (np.concatenate([-bias, bias]) / 2).astype(np.float32)
    return coef, bias


def _scores(x: Any, coef: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> Any:
    return np.asarray(x @ coef.T) + bias


@dataclass
class _ContextResult:
    """The context-encoded intent model and when to consult it."""

    onnx_bytes: bytes
    settings: dict[str, Any]  # the manifest's ``context``


@dataclass
class _IntentResult:
    labels: list[str]
    temperature: float
    threshold: float
    onnx_bytes: bytes
    vocab: NgramVocabulary
    validation: dict[str, Any]
    context: _ContextResult | None = None


def _train_intents(
    examples: Sequence[Example], params: TrainingParams, progress: Progress,
    context: ContextFactory | None = None,
) -> _IntentResult:
    """The intent model; with ``context``, also the context-encoded one (see
    :attr:`TrainingParams.context_encoder`)."""
    texts = [clean_text(e.text) for e in examples]
    names = [e.intent or "" for e in examples]
    labels = sorted(set(names))
    if len(labels) < 2:
        raise ValueError(f"need at least two intents to train, got {labels}")
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[n] for n in names], np.int64)
    oos_index = index.get(params.oos_label)
    encoder: TokenEncoder | None = None
    embedding: npt.NDArray[np.float16] | None = None
    if params.use_embeddings:
        tokenizer, embedding = load_wordllama()
        encoder = TokenEncoder(tokenizer, embedding.shape[0])
    train_idx, valid_idx = _stratified_split(names, params.validation_fraction, params.seed)
    sentences: npt.NDArray[np.float32] | None = None
    if context is not None:
        sentence_encoder = context([texts[i] for i in train_idx], y[train_idx])
        progress("context vectors")
        vectors = sentence_encoder.embed(texts, batch_size=64)
        sentences = (vectors * params.context_weight).astype(np.float32)

    def with_sentences(x: Any, idx: npt.NDArray[np.int64]) -> Any:
        """Rows ``idx``'s features ``x`` with their sentence vectors appended."""
        from scipy.sparse import csr_matrix, hstack

        assert sentences is not None
        return hstack([x, csr_matrix(sentences[idx])], format="csr")

    def fit(idx: npt.NDArray[np.int64]) -> _IntentFit:
        subset = [texts[i] for i in idx]
        vocab = NgramVocabulary.fit(subset, params.char_range)
        feat = _IntentFeaturizer(vocab, encoder, embedding)
        x = feat.matrix(subset)
        coef, bias = _fit_svm(x, y[idx], len(labels), params.c, params.seed)
        if sentences is None:
            return _IntentFit(feat, coef, bias)
        # The context model leaves the wordllama vector out: beside a sentence
        # transformer's it only dilutes (Banking77, 5 folds, the context model alone:
        # 92.7 → 92.8% with MiniLM, 93.3 → 93.6% with MPNet). Its weights there are
        # zeros, so the context graph keeps the first one's inputs.
        n_ngrams = feat.ngram_columns
        context_coef, context_bias = _fit_svm(
            with_sentences(x[:, :n_ngrams], idx), y[idx], len(labels), params.c, params.seed
        )
        unused = np.zeros((len(context_coef), x.shape[1] - n_ngrams), np.float32)
        context_coef = np.hstack([context_coef[:, :n_ngrams], unused, context_coef[:, n_ngrams:]])
        return _IntentFit(feat, coef, bias, context_coef, context_bias)

    temperature, threshold = 1.0, 0.0
    context_settings: dict[str, Any] = {"temperature": 1.0, "oos_threshold": 0.0,
                                        "route_below": params.context_route_below}
    validation: dict[str, Any] = {"n": int(valid_idx.shape[0])}
    fitted: _IntentFit | None = None
    if valid_idx.shape[0] >= 10:
        progress("fit on the training split")
        fitted = fit(train_idx)
        x_valid = fitted.feat.matrix([texts[i] for i in valid_idx])
        scores = _scores(x_valid, fitted.coef, fitted.bias)
        progress("calibrate on the validation split")
        yv = y[valid_idx]
        temperature = fit_temperature(scores, yv)
        probs = softmax(scores, temperature)
        threshold = fit_oos_threshold(probs, yv, oos_index, params.max_in_scope_loss)
        pred, oos = _decisions(probs, threshold, oos_index)
        validation["accuracy"] = round(float(np.mean(pred == yv)), 4)
        validation["accuracy_no_threshold"] = round(float(np.mean(probs.argmax(1) == yv)), 4)
        if oos_index is not None and np.any(yv == oos_index):
            validation["oos_recall"] = round(float(np.mean(oos[yv == oos_index])), 4)
        if sentences is not None:
            assert fitted.context_coef is not None and fitted.context_bias is not None
            context_settings, context_pred = _calibrate_context(
                _scores(with_sentences(x_valid, valid_idx), fitted.context_coef,
                        fitted.context_bias),
                yv, oos_index, params, probs.max(axis=1), pred,
            )
            validation["accuracy_with_context"] = round(float(np.mean(context_pred == yv)), 4)
    else:
        progress("validation split too small: default calibration")
        progress("skipped")
    if params.refit or fitted is None:
        progress("refit on all examples")
        fitted = fit(np.arange(len(texts), dtype=np.int64))
    else:
        progress("no refit")
    feat = fitted.feat
    context_result: _ContextResult | None = None
    if fitted.context_coef is not None and fitted.context_bias is not None:
        assert params.context_encoder is not None
        context_result = _ContextResult(
            _export_intents(feat, fitted.context_coef, fitted.context_bias,
                            context_settings["temperature"], params.context_weight),
            {"encoder": params.context_encoder, "weight": params.context_weight,
             **context_settings},
        )
    return _IntentResult(
        labels, temperature, threshold,
        _export_intents(feat, fitted.coef, fitted.bias, temperature), feat.vocab, validation,
        context_result,
    )


def _export_intents(
    feat: _IntentFeaturizer, coef: npt.NDArray[np.float32], bias: npt.NDArray[np.float32],
    temperature: float, context_weight: float | None = None,
) -> bytes:
    """The ONNX intent graph for SVM weights over ``feat``'s features (then, with
    ``context_weight``, the context encoder's vector's)."""
    # Here, not at the top: onnx (which onnx_graph needs) is for building models only.
    from agents.nlu.onnx_graph import build_linear_model

    n_sparse = feat.vocab.n_features
    n_dense = n_sparse + (feat.embedding.shape[1] if feat.embedding is not None else 0)
    # IDF folded into the weights: the graph sums weight rows per occurrence.
    w_sparse = np.ascontiguousarray(coef[:, :n_sparse].T * feat.vocab.idf[:, None])
    if w_sparse.shape[0] == 0:
        w_sparse = np.zeros((1, bias.shape[0]), np.float32)
    model = build_linear_model(
        w_sparse,
        bias,
        blocks=(("word", True), ("char", True)),
        temperature=temperature,
        embedding=feat.embedding,
        embedding_weights=(
            np.ascontiguousarray(coef[:, n_sparse:n_dense].T * _EMB_WEIGHT)
            if feat.embedding is not None else None
        ),
        context_weights=(
            np.ascontiguousarray(coef[:, n_dense:].T * context_weight)
            if context_weight is not None else None
        ),
        name="parley_intents" if context_weight is None else "parley_intents_context",
    )
    return model.SerializeToString()


@dataclass
class _IntentFit:
    feat: _IntentFeaturizer
    coef: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    context_coef: npt.NDArray[np.float32] | None = None
    context_bias: npt.NDArray[np.float32] | None = None


def _decisions(
    probs: npt.NDArray[np.float32], threshold: float, oos_index: int | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Each row's label (the oos label, or -1 without one, when out of scope), and oos."""
    top, oos = decide(probs, threshold, oos_index)
    return np.where(oos, -1 if oos_index is None else oos_index, top), oos


def _calibrate_context(
    scores: npt.NDArray[np.float32], yv: npt.NDArray[np.int64], oos_index: int | None,
    params: TrainingParams, fast_confidence: npt.NDArray[np.float32],
    fast_pred: npt.NDArray[np.int64],
) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
    """The context model's temperature and oos threshold, with the validation predictions
    when it is consulted under ``params.context_route_below``."""
    temperature = fit_temperature(scores, yv)
    probs = softmax(scores, temperature)
    threshold = fit_oos_threshold(probs, yv, oos_index, params.max_in_scope_loss)
    context_pred, _ = _decisions(probs, threshold, oos_index)
    routed = fast_confidence < params.context_route_below
    settings = {"temperature": round(temperature, 6), "oos_threshold": round(threshold, 4),
                "route_below": params.context_route_below,
                "routed_in_validation": round(float(np.mean(routed)), 4)}
    return settings, np.where(routed, context_pred, fast_pred)


@dataclass
class _TaggerResult:
    tags: list[str]
    entity_labels: list[str]
    features: list[str]
    onnx_bytes: bytes
    span_models: SpanModels | None


def _train_tagger(
    examples: Sequence[Example], params: TrainingParams,
    entity_encoder: EntityEncoderFactory | None = None,
) -> _TaggerResult | None:
    from sklearn.svm import LinearSVC

    # Here, not at the top: onnx (which onnx_graph needs) is for building models only.
    from agents.nlu.onnx_graph import build_linear_model

    annotated = [e for e in examples if e.entities is not None]
    if not any(e.entities for e in annotated):
        return None
    recognisers = Recognisers(params.recognisers)
    tokenizer, _ = load_wordllama()
    encoder = TokenEncoder(tokenizer, tokenizer.get_vocab_size())
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    tag_names: list[str] = []
    messages: list[AnnotatedMessage] = []
    texts: list[str] = []
    n_tokens = 0
    for ex in annotated:
        text = clean_text(ex.text)
        texts.append(text)
        tokens = tokenize(text)
        spans = [(s.start, s.end, s.entity) for s in ex.entities or ()]
        tag_names += encode_bio(tokens, spans)
        matches = recognisers.find(text, _TRAIN_REFERENCE)
        messages.append(AnnotatedMessage(tokens, spans, matches, n_tokens))
        for feats in token_features(tokens, matches, encoder.n_pieces):
            for f in feats:
                rows.append(n_tokens)
                cols.append(vocab.setdefault(f, len(vocab)))
            n_tokens += 1
    tags = sorted(set(tag_names), key=lambda t: (t != "O", t[2:], t[:1]))
    if len(tags) < 2:
        return None
    tag_index = {t: i for i, t in enumerate(tags)}
    from scipy.sparse import csr_matrix

    x = csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_tokens, len(vocab))
    )
    x.data[:] = 1.0  # a feature string occurring twice for a token is still binary
    y = np.array([tag_index[t] for t in tag_names], np.int64)
    model = LinearSVC(C=params.tagger_c, random_state=params.seed, max_iter=5000)
    model.fit(x, y)
    coef = model.coef_.astype(np.float32)
    bias = model.intercept_.astype(np.float32)
    if len(tags) == 2:
        coef = np.vstack([-coef, coef]) / 2
        bias = np.concatenate([-bias, bias]) / 2
    onnx_model = build_linear_model(np.ascontiguousarray(coef.T), bias, name="parley_tagger")
    features = [""] * len(vocab)
    for f, i in vocab.items():
        features[i] = f
    entity_labels = sorted({t[2:] for t in tags if t != "O"})
    span_models = (
        fit_span_models(
            messages, x, y, tags, encoder.n_pieces, tagger_c=params.tagger_c, seed=params.seed
        )
        if params.refine_spans else None
    )
    if entity_encoder is not None:
        tag_ids = y.tolist()
        entity_encoder(texts, [m.tokens for m in messages],
                       [tag_ids[m.first_row : m.first_row + len(m.tokens)] for m in messages],
                       tags)
    return _TaggerResult(
        tags, entity_labels, features, onnx_model.SerializeToString(), span_models
    )


def require_training_packages(params: TrainingParams) -> None:
    """Fail before any work, naming what to install, when a package that training with
    ``params`` needs is missing (the worker's install serves models but cannot train
    them), or the weights of an encoder it builds (MiniLM, all-mpnet-base-v2)."""
    purpose = "training an NLU model"
    for module in ("sklearn", "onnx", "tqdm"):
        require(module, extra="train", purpose=purpose)
    if importlib.util.find_spec("wordllama") is None:  # its files are read, never imported
        raise MissingExtra(purpose, "wordllama", "train")
    if params.tunes_context_encoder or params.entity_encoder:
        from agents.nlu.finetune import require_torch

        require_torch()
    for encoder in (params.context_encoder, params.entity_encoder):
        if encoder:
            from agents.encoders.embedder import require_weights

            require_weights(encoder)


def train_model(
    examples: Sequence[Example],
    out_dir: Path,
    params: TrainingParams | None = None,
    *,
    show_progress: bool = False,
    data_hash: str | None = None,
) -> Manifest:
    """Train on ``examples`` and write a complete model folder to ``out_dir``.

    The folder is built next to ``out_dir`` and renamed into place, so a reader
    never sees half a model.
    """
    import json

    params = params or TrainingParams()
    if not examples:
        raise ValueError("no training examples")
    require_training_packages(params)
    from tqdm import tqdm

    digest = data_hash or hash_training_data(
        canonical_lines(examples), CODE_VERSION, json.dumps(params.describe(), sort_keys=True),
        json.dumps(params.recognisers.to_json(), sort_keys=True),
    )
    steps = 5 + 2 * (params.context_encoder is not None)
    bar = tqdm(total=steps, desc="nlu train", file=sys.stderr, disable=not show_progress,
               unit="step", leave=True)

    def progress(step: str, *, advance: bool = True) -> None:
        bar.set_postfix_str(step)
        if advance:
            bar.update(1)

    try:
        with atomic_directory(Path(out_dir)) as folder:
            manifest = _train_into(folder, examples, params, digest, progress)
            progress("exported")
    finally:
        bar.close()
    log.info("nlu.train.done version=%s labels=%d out=%s", manifest.version,
             len(manifest.labels), out_dir)
    return manifest


def _train_into(
    folder: Path, examples: Sequence[Example], params: TrainingParams, digest: str,
    progress: Progress,
) -> Manifest:
    """Train the intents and the tagger, and write their files and the manifest to ``folder``."""
    import json

    intent_examples = [e for e in examples if e.intent]
    files: dict[str, str] = {}
    intents: _IntentResult | None = None
    if intent_examples:
        context: ContextFactory | None = None
        if params.context_encoder is not None:
            context = functools.partial(_context_encoder, folder / "context", params, progress)
        intents = _train_intents(intent_examples, params, progress, context)
        (folder / "intent.onnx").write_bytes(intents.onnx_bytes)
        intents.vocab.save(folder / "intent_features.npz")
        files.update(intent_model="intent.onnx", intent_features="intent_features.npz")
        if intents.context is not None:
            (folder / "intent_context.onnx").write_bytes(intents.context.onnx_bytes)
            files.update(context_intent_model="intent_context.onnx", **CONTEXT_FILES)
    else:
        for step in ("no intents", "-", "-"):
            progress(step)
    progress("entity tagger")
    entity_encoder: EntityEncoderFactory | None = None
    if params.entity_encoder is not None:
        entity_encoder = functools.partial(
            _entity_encoder, (folder / ENTITY_ENCODER_FILES["entity_encoder"]).parent, params,
            progress,
        )
    tagger = _train_tagger(examples, params, entity_encoder)
    if tagger is not None:
        (folder / "tagger.onnx").write_bytes(tagger.onnx_bytes)
        (folder / "tagger_features.json").write_text(json.dumps(tagger.features), "utf-8")
        files.update(tagger_model="tagger.onnx", tagger_features="tagger_features.json")
        if tagger.span_models is not None:
            tagger.span_models.save(folder / "spans.npz")
            files["span_models"] = "spans.npz"
        if entity_encoder is not None:  # built with the tagger
            files.update(ENTITY_ENCODER_FILES)
    if "tagger_model" in files or (intent_examples and params.use_embeddings):
        shutil.copyfile(wordllama_files()[0], folder / "tokenizer.json")
        files["tokenizer"] = "tokenizer.json"
    manifest = Manifest(
        version=f"nlu-{digest[:12]}",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        training_data_sha256=digest,
        code_version=CODE_VERSION,
        oos_label=params.oos_label,
        labels=intents.labels if intents else [],
        temperature=round(intents.temperature, 6) if intents else 1.0,
        oos_threshold=round(intents.threshold, 4) if intents else 0.0,
        entity_labels=tagger.entity_labels if tagger else [],
        tagger_tags=tagger.tags if tagger else [],
        max_text_chars=MAX_TEXT_CHARS,
        recognisers=params.recognisers.to_json(),
        training={
            **params.describe(),
            "n_examples": len(examples),
            "n_intent_examples": len(intent_examples),
            "n_entity_examples": sum(1 for e in examples if e.entities),
        },
        validation=intents.validation if intents else {},
        files=files,
        context=intents.context.settings if intents and intents.context else {},
    )
    manifest.save(folder)
    return manifest


def _context_encoder(
    out_dir: Path, params: TrainingParams, progress: Progress, texts: Sequence[str],
    y: npt.NDArray[np.int64],
) -> Embedder:
    """Write the context encoder's folder; ``minilm-tuned(-int8)`` fine-tunes MiniLM on
    ``texts`` (the training split, so validation stays unseen) first."""
    kind = str(params.context_encoder)
    if not params.tunes_context_encoder:
        progress("build the context encoder")
        return Embedder(build_embedder(kind, out_dir), threads=_JOBS)

    weights, config, tokenizer_file = minilm_checkpoint()
    token_ids = [e.ids for e in plain_tokenizer(tokenizer_file).encode_batch(list(texts))]
    tuned = finetune.fine_tune_encoder(
        weights, config, token_ids, y,
        finetune.TuningParams(epochs=params.context_tune_epochs, seed=params.seed, threads=_JOBS),
        report=lambda step: progress(step, advance=False),
    )
    progress("build the fine-tuned context encoder")
    folder = build_embedder(kind.replace("minilm-tuned", "minilm"), out_dir, weights=tuned,
                            tuned_on=f"{len(texts)} training examples")
    return Embedder(folder, threads=_JOBS)


def _entity_encoder(
    out_dir: Path, params: TrainingParams, progress: Progress, texts: Sequence[str],
    token_lists: Sequence[Sequence[Token]], tag_ids: Sequence[Sequence[int]],
    tags: Sequence[str],
) -> None:
    """Write the entity encoder's folder: MiniLM fine-tuned on the tagger's tags."""
    build_entity_encoder(
        out_dir, texts, token_lists, tag_ids, tags, kind=str(params.entity_encoder),
        epochs=params.entity_tune_epochs,
        seed=params.seed, threads=_JOBS,
        report=lambda step: progress(f"entity encoder {step}", advance=False),
    )


def train_model_from_files(
    paths: Sequence[Path], out_dir: Path, params: TrainingParams | None = None,
    *, show_progress: bool = False,
) -> Manifest:
    return train_model(load_examples(paths), out_dir, params, show_progress=show_progress)
