"""Inference: a trained model folder → :class:`Understanding` per message.

Imports only numpy, onnxruntime and ``tokenizers`` (plus this package's
pure-Python modules): never scikit-learn. A test checks it in a subprocess.

Bad input has a defined result: text is cleaned one character for one (see
:func:`agents.nlu.text.clean_text`) and cut to ``max_text_chars``; a message
without any word character (empty, whitespace, emoji or punctuation only) is
out of scope with confidence 0 and no ranking.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from agents.encoders.embedder import Embedder
from agents.encoders.wordllama import TokenEncoder
from agents.nlu.entity_encoder import EntityEncoder
from agents.nlu.errors import ManifestError
from agents.nlu.features import NgramVocabulary
from agents.nlu.manifest import Manifest
from agents.nlu.recognisers import RecogniserConfig, Recognisers, normalise_value
from agents.nlu.results import EntityMatch, Understanding
from agents.nlu.spans import SpanModels
from agents.nlu.tagger import TagDecoder, TaggerColumns
from agents.nlu.text import clean_text, tokenize
from agents.onnx_runtime import cpu_session

__all__ = ["TOP_K", "EntityMatch", "ManifestError", "NLUModel", "Understanding"]

TOP_K = 5


_ALNUM = re.compile(r"[^\W_]")
"""A letter or digit: a message without one is out of scope without classifying it."""


class NLUModel:
    """A loaded model folder. One instance serves a whole event loop; calls from several
    threads at once need one instance per thread (it memoises words' features)."""

    version: str

    def __init__(self, model_dir: Path, manifest: Manifest, *, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self.version = manifest.version
        self.labels: tuple[str, ...] = tuple(manifest.labels)
        self.oos_label = manifest.oos_label
        self.threshold = float(manifest.oos_threshold)
        self._oos_index = self.labels.index(self.oos_label) if self.oos_label in self.labels else -1
        self.recognisers = Recognisers(RecogniserConfig.from_json(manifest.recognisers))
        files = manifest.files
        self._intents: ort.InferenceSession | None = None
        self._vocab: NgramVocabulary | None = None
        self._encoder: TokenEncoder | None = None
        self._embed_intents = False
        if "tokenizer" in files:
            tokenizer = Tokenizer.from_file(str(model_dir / files["tokenizer"]))
            self._encoder = TokenEncoder(tokenizer, tokenizer.get_vocab_size())
        if manifest.has_intents:
            self._intents = cpu_session(model_dir / files["intent_model"], threads)
            self._vocab = NgramVocabulary.load(model_dir / files["intent_features"])
            self._embed_intents = "tok_id" in {i.name for i in self._intents.get_inputs()}
        self._tagger: ort.InferenceSession | None = None
        self._tagger_columns: TaggerColumns | None = None
        self._tags: tuple[str, ...] = tuple(manifest.tagger_tags)
        self._decoder = TagDecoder(self._tags)
        if manifest.has_tagger:
            if self._encoder is None:
                raise ManifestError(model_dir, "the entity tagger needs a tokenizer file")
            self._tagger = cpu_session(model_dir / files["tagger_model"], threads)
            names_list = json.loads((model_dir / files["tagger_features"]).read_text("utf-8"))
            self._tagger_columns = TaggerColumns(
                {f: i for i, f in enumerate(names_list)}, self._encoder.n_pieces
            )
        self._span_models: SpanModels | None = None
        if "span_models" in files:
            self._span_models = SpanModels.load(model_dir / files["span_models"])
        self._entity_encoder: EntityEncoder | None = None
        if "entity_encoder" in files and self._tagger is not None:
            self._entity_encoder = EntityEncoder(
                (model_dir / files["entity_encoder"]).parent, threads=threads
            )
            if self._entity_encoder.tags != self._tags:
                raise ManifestError(model_dir, "the entity encoder's tags are not the tagger's")
        self._context: _ContextModel | None = None
        if "context_intent_model" in files and self._intents is not None:
            self._context = _ContextModel(
                Embedder((model_dir / files["context_encoder"]).parent, threads=threads),
                cpu_session(model_dir / files["context_intent_model"], threads),
                float(manifest.context["oos_threshold"]),
                float(manifest.context["route_below"]),
            )

    @property
    def has_tagger(self) -> bool:
        return self._tagger is not None

    @property
    def has_context_encoder(self) -> bool:
        """Whether unsure messages are scored again with a sentence transformer."""
        return self._context is not None

    @property
    def has_entity_encoder(self) -> bool:
        return self._entity_encoder is not None

    @property
    def has_transformer(self) -> bool:
        """Whether messages may run a transformer (a context or entity encoder):
        milliseconds each, so callers on an event loop run such a model in a thread."""
        return self._context is not None or self._entity_encoder is not None

    @classmethod
    def load(cls, model_dir: Path, *, threads: int = 1) -> NLUModel:
        """Load a folder written by ``parley nlu train``; :class:`ManifestError` if unusable."""
        model_dir = Path(model_dir)
        manifest = Manifest.load(model_dir)
        try:
            return cls(model_dir, manifest, threads=threads)
        except (OSError, ValueError, KeyError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
            raise ManifestError(model_dir, f"cannot load its files: {exc}") from exc

    # --- public API -------------------------------------------------------
    def understand(self, text: str, reference_time: datetime | None = None) -> Understanding:
        return self.understand_batch([text], reference_time)[0]

    def understand_batch(
        self, texts: Sequence[str],
        reference_time: datetime | Sequence[datetime] | None = None,
    ) -> list[Understanding]:
        """Understand ``texts``; relative dates and times (``tomorrow``, ``in 3 days``) are
        resolved against ``reference_time``: one for the batch or one per text (default:
        now, UTC)."""
        if not texts:
            return []
        if reference_time is None or isinstance(reference_time, datetime):
            references: Sequence[datetime] = [reference_time or datetime.now(UTC)] * len(texts)
        elif len(reference_time) == len(texts):
            references = reference_time
        else:
            raise ValueError(f"{len(reference_time)} reference times for {len(texts)} texts")
        cleaned = [clean_text(t, self.manifest.max_text_chars) for t in texts]
        intents = self._classify(cleaned)
        entities = self._entities(cleaned, references)
        return [
            Understanding(intent, conf, oos, ranking, ents, self.version)
            for (intent, conf, oos, ranking), ents in zip(intents, entities, strict=True)
        ]

    # --- intents ----------------------------------------------------------
    def intent_probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Calibrated probabilities (rows x labels) for cleaned ``texts`` (the first
        intent model's: without the context encoder)."""
        assert self._intents is not None
        probs: npt.NDArray[np.float32] = self._intents.run(["probs"], self._feeds(texts))[0]
        return probs

    def _feeds(self, texts: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
        assert self._intents is not None and self._vocab is not None
        batch = self._vocab.transform(texts)
        feeds: dict[str, npt.NDArray[Any]] = {
            "batch_size": np.array([len(texts)], np.int64),
            "word_row": batch.word_rows,
            "word_col": batch.word_cols,
            "word_scale": batch.word_scale[:, None],
            "char_row": batch.char_rows,
            "char_col": batch.char_cols,
            "char_scale": batch.char_scale[:, None],
        }
        if self._embed_intents:
            assert self._encoder is not None
            feeds["tok_id"], feeds["tok_row"] = self._encoder.encode(texts)
        return feeds

    def _classify(
        self, texts: Sequence[str]
    ) -> list[tuple[str, float, bool, tuple[tuple[str, float], ...]]]:
        empty = (self.oos_label, 0.0, True, ())
        out: list[tuple[str, float, bool, tuple[tuple[str, float], ...]]] = [empty] * len(texts)
        live = [i for i, t in enumerate(texts) if _ALNUM.search(t)]
        if self._intents is None or not live:
            return out
        live_texts = [texts[i] for i in live]
        probs = self.intent_probabilities(live_texts)
        thresholds = [self.threshold] * len(live)
        if self._context is not None:
            unsure = np.flatnonzero(probs.max(axis=1) < self._context.route_below)
            if unsure.size:
                # Their features again (µs each) rather than a renumbered slice of the
                # batch's: the encoder takes milliseconds per message anyway.
                unsure_texts = [live_texts[j] for j in unsure]
                probs[unsure] = self._context.probabilities(
                    unsure_texts, self._feeds(unsure_texts)
                )
                for j in unsure.tolist():
                    thresholds[j] = self._context.threshold
        k = min(TOP_K, probs.shape[1])
        order = np.argsort(-probs, axis=1)[:, :k]
        top_probs = np.round(probs[np.arange(len(live))[:, None], order].astype(np.float64), 6)
        labels, oos_index = self.labels, self._oos_index
        for i, top, p, threshold in zip(live, order.tolist(), top_probs.tolist(), thresholds,
                                        strict=True):
            ranking = tuple(zip([labels[j] for j in top], p, strict=True))
            conf = p[0]
            if top[0] == oos_index:
                out[i] = (self.oos_label, conf, True, ranking)
            elif conf < threshold:
                out[i] = (self.oos_label, round(1.0 - conf, 6), True, ranking)
            else:
                out[i] = (labels[top[0]], conf, False, ranking)
        return out

    # --- entities ---------------------------------------------------------
    def _entities(
        self, texts: Sequence[str], references: Sequence[datetime]
    ) -> list[tuple[EntityMatch, ...]]:
        found = [self.recognisers.find(t, reference) if t.strip() else []
                 for t, reference in zip(texts, references, strict=True)]
        if self._tagger is None:
            return [tuple(f) for f in found]
        out: list[tuple[EntityMatch, ...]] = []
        tagged = zip(texts, references, found, self._tag(texts, found), strict=True)
        for text, reference, matches, spans in tagged:
            model = [
                EntityMatch(e, a, b, text[a:b], normalise_value(e, text[a:b], reference), "model")
                for a, b, e in spans
            ]
            rest = [m for m in matches if all(m.end <= x.start or m.start >= x.end for x in model)]
            out.append(tuple(sorted([*model, *rest], key=lambda m: (m.start, m.end))))
        return out

    def _tag(
        self, texts: Sequence[str], found: Sequence[Sequence[EntityMatch]]
    ) -> list[list[tuple[int, int, str]]]:
        """Tagger spans per text: one onnxruntime call for the tokens of the whole batch."""
        assert self._tagger is not None and self._encoder is not None
        assert self._tagger_columns is not None
        token_lists = [tokenize(t) if t.strip() else [] for t in texts]
        rows, cols = self._tagger_columns.batch(token_lists, found)
        n_tokens = sum(len(tokens) for tokens in token_lists)
        if not n_tokens:
            return [[] for _ in texts]
        feeds = {
            "feat_row": rows,
            "feat_col": cols,
            "batch_size": np.array([n_tokens], np.int64),
        }
        scores = self._tagger.run(["logits"], feeds)[0]
        if self._entity_encoder is not None:
            scores = scores + self._entity_encoder.scores(texts, token_lists)
        spans: list[list[tuple[int, int, str]]] = []
        offset = 0
        refine = self._span_models.refine if self._span_models is not None else None
        all_runs = self._decoder.runs_batch(scores, [len(t) for t in token_lists])
        for tokens, matches, runs in zip(token_lists, found, all_runs, strict=True):
            own = scores[offset : offset + len(tokens)]
            offset += len(tokens)
            if runs and refine is not None:
                runs = refine(tokens, own, self._tags, runs, matches, self._encoder.n_pieces)
            spans.append([(tokens[a].start, tokens[b - 1].end, e) for a, b, e in runs])
        return spans


class _ContextModel:
    """The intent model that also reads a sentence transformer's vector of the message,
    consulted for the messages the first model is unsure of (confidence under
    ``route_below``, tuned at training: see ``TrainingParams.context_encoder``)."""

    def __init__(
        self, encoder: Embedder, session: ort.InferenceSession, threshold: float,
        route_below: float,
    ) -> None:
        self.encoder = encoder
        self.session = session
        self.threshold = threshold
        self.route_below = route_below

    def probabilities(
        self, texts: Sequence[str], feeds: dict[str, npt.NDArray[Any]]
    ) -> npt.NDArray[np.float32]:
        """Probabilities for ``texts``, given the first intent model's ``feeds`` for them."""
        probs: npt.NDArray[np.float32] = self.session.run(
            ["probs"], {**feeds, "ctx": self.encoder.embed(texts)}
        )[0]
        return probs
