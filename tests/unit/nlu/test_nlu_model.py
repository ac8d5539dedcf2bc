"""Training on a small domain and the runtime API (bad input included)."""

from __future__ import annotations

import json
import shutil
from dataclasses import FrozenInstanceError
from datetime import datetime
from pathlib import Path

import pytest

import agents.nlu
from agents.dialogue.loader import load_bot
from agents.dialogue.training import ensure_nlu_model, resolve_nlu_model
from agents.nlu.data import load_examples
from agents.nlu.errors import DataError, ManifestError
from agents.nlu.manifest import Manifest
from agents.nlu.model import EntityMatch, NLUModel, Understanding
from agents.nlu.tagger import TaggerColumns, token_features
from agents.nlu.text import tokenize
from agents.nlu.train import TrainingParams, train_model
from examples import DEMO
from kernel.settings import Settings
from tests.unit.nlu.cases import CLEAR_INTENTS, modules_loaded_by_inference

REF = datetime(2024, 11, 20, 12, 0)


def test_public_api_exports() -> None:
    assert set(agents.nlu.__all__) >= {"EntityMatch", "NLUModel", "Understanding"}
    u = Understanding("greet", 1.0, False, (), (), "v")
    with pytest.raises(FrozenInstanceError):
        u.intent = "x"  # type: ignore[misc]
    assert not hasattr(u, "__dict__")  # slots


@pytest.mark.parametrize(
    ("text", "intent"),
    [*CLEAR_INTENTS, ("thanks a lot", "thanks")],
)
def test_demo_model_separates_clearly_different_intents(
    demo_model: NLUModel, text: str, intent: str
) -> None:
    u = demo_model.understand(text, REF)
    assert u.intent == intent
    assert u.oos == (intent == "oos")
    assert 0.0 <= u.confidence <= 1.0
    assert len(u.ranking) == 5
    confidences = [c for _, c in u.ranking]
    assert confidences == sorted(confidences, reverse=True)
    assert u.model_version == demo_model.version


def test_entities_from_model_and_recognisers(demo_model: NLUModel) -> None:
    u = demo_model.understand("I lost my debit card yesterday and £50 is gone", REF)
    found = {(e.entity, e.text, e.value, e.source) for e in u.entities}
    assert ("card_type", "debit", "debit", "model") in found
    assert ("date", "yesterday", "2024-11-19", "date") in found
    assert ("amount", "£50", "50.00 GBP", "amount") in found
    for e in u.entities:
        assert isinstance(e, EntityMatch)
        assert "I lost my debit card yesterday and £50 is gone"[e.start : e.end] == e.text


def test_batch_matches_single(demo_model: NLUModel) -> None:
    texts = ["hi", "cancel order AB-123456", "", "what's my balance", "tell me a joke"]
    batch = demo_model.understand_batch(texts, REF)
    assert batch == [demo_model.understand(t, REF) for t in texts]
    assert demo_model.understand_batch([], REF) == []


def test_each_message_of_a_batch_has_its_own_reference_time(demo_model: NLUModel) -> None:
    texts = ["pay it tomorrow", "pay it tomorrow"]
    late = datetime(2024, 11, 21, 0, 0, 1)  # two seconds after midnight
    first, second = demo_model.understand_batch(texts, [REF, late])
    assert [e.value for e in first.entities if e.entity == "date"] == ["2024-11-21"]
    assert [e.value for e in second.entities if e.entity == "date"] == ["2024-11-22"]
    with pytest.raises(ValueError, match="1 reference times for 2 texts"):
        demo_model.understand_batch(texts, [REF])


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t ", "😀😀😀", "?!...", "\x00\x01\x02", "\ud800\udfff lone", "\x7f"],
)
def test_no_word_input_is_out_of_scope_with_zero_confidence(
    demo_model: NLUModel, text: str
) -> None:
    u = demo_model.understand(text, REF)
    if any(c.isalnum() for c in text):
        assert isinstance(u.intent, str)
    else:
        assert (u.intent, u.confidence, u.oos, u.ranking) == ("oos", 0.0, True, ())


def test_huge_and_hostile_input_is_handled(demo_model: NLUModel) -> None:
    huge = "where is my order " * 6000  # ~100 KB
    u = demo_model.understand(huge, REF)
    assert u.intent == "order_status"
    assert all(e.end <= demo_model.manifest.max_text_chars for e in u.entities)
    assert demo_model.understand("card\x00lost\u202e\ufeff", REF).intent
    assert demo_model.understand(b"\xff\xfebad bytes".decode("utf-8", "surrogateescape"), REF)


def test_manifest_records_training(demo_model_dir: Path) -> None:
    m = Manifest.load(demo_model_dir)
    raw = json.loads((demo_model_dir / "manifest.json").read_text())
    for key in ("labels", "oos_threshold", "temperature", "version", "created",
                "training_data_sha256"):
        assert key in raw
    assert "oos" in m.labels and "greet" in m.labels
    assert len(m.training_data_sha256) == 64
    # the entities annotated in examples/demo/intents.yml
    assert {"account_type", "amount", "card_type", "order_id", "recipient"} <= set(
        m.entity_labels)
    assert 0.0 <= m.oos_threshold < 1.0
    assert (demo_model_dir / "intent.onnx").is_file()


def test_demo_model_is_cached(demo_model_dir: Path) -> None:
    again = ensure_nlu_model(load_bot(DEMO.folder), demo_model_dir.parent)
    assert again == demo_model_dir


def test_the_model_a_worker_serves(demo_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    configured = settings.replace(nlu_model_dir="/srv/nlu")
    assert resolve_nlu_model(configured, load_bot(DEMO.folder)) == Path("/srv/nlu")
    (tmp_path / "bots").symlink_to(demo_model_dir.parent)  # the demo model, trained already
    assert resolve_nlu_model(settings, load_bot(DEMO.folder)) == \
        tmp_path / "bots" / demo_model_dir.name


def test_missing_or_broken_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json"):
        NLUModel.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError):
        NLUModel.load(tmp_path)


def test_model_folder_of_an_older_format_asks_for_retraining(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(demo_model_dir, old)
    raw = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**raw, "format": 1}))
    with pytest.raises(ManifestError, match=r"format 1, expected 2"):
        NLUModel.load(old)


def test_word_rarity_counts_tokenizer_pieces(demo_model: NLUModel) -> None:
    encoder = demo_model._encoder
    assert encoder is not None
    assert encoder.n_pieces("card") == 1
    assert encoder.n_pieces("kawamoto") == 4


def test_tagger_columns_are_the_known_token_features(demo_model: NLUModel) -> None:
    """Inference's batched tagger columns equal training's feature strings looked up, in
    order, whatever the batch around a message and whether its words are memoised."""
    assert demo_model._tagger_columns is not None and demo_model._encoder is not None
    vocab = demo_model._tagger_columns.vocab
    texts = [
        "Track order AB-123456 from 3 March until Friday please",
        "call me on +44 7700 900123, Kawamoto from Ipswich",
        "", "?", "Refund £27.50 to account number 12345678", "MAY may May 5th",
        "from", "on Monday at 5pm to a b c d e f g h i j between",
    ]
    tokens = [tokenize(text) for text in texts]
    matches = [demo_model.recognisers.find(text, REF) for text in texts]
    expected = [
        [
            [vocab[f] for f in feats if f in vocab]
            for feats in token_features(toks, found, demo_model._encoder.n_pieces)
        ]
        for toks, found in zip(tokens, matches, strict=True)
    ]

    def pairs(messages: list[int]) -> list[tuple[int, int]]:
        per_token = [cols for m in messages for cols in expected[m]]
        return [(row, col) for row, cols in enumerate(per_token) for col in cols]

    batches = ([0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0] * 4, [1], [3, 3], [2], [])
    for max_entries, vectorise_from in [(200_000, 0), (200_000, 10**9), (2, 0), (2, 10**9)]:
        columns = TaggerColumns(vocab, demo_model._encoder.n_pieces, max_entries=max_entries)
        columns.vectorise_from_tokens = vectorise_from  # numpy, or Python, for every batch
        for batch in batches * 2:  # cold, then memoised (unless the memo is cleared)
            rows, cols = columns.batch([tokens[m] for m in batch], [matches[m] for m in batch])
            assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == pairs(batch)


def test_bad_training_data_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hi", "intent": "greet"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        load_examples([path])


def test_entity_only_training_nlupp_format(tmp_path: Path) -> None:
    lines = [
        {"text": f"pay {n} pounds to {who}", "intents": ["pay"],
         "entities": [{"start": 4, "end": 4 + len(f"{n} pounds"), "entity": "amount_of_money"}]}
        for n in range(5, 40) for who in ("bob", "ann")
    ]
    path = tmp_path / "ents.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "model"
    manifest = train_model(load_examples([path]), out, TrainingParams())
    assert manifest.labels == [] and manifest.entity_labels == ["amount_of_money"]
    model = NLUModel.load(out)
    u = model.understand("pay 77 pounds to carl", REF)
    assert u.oos and u.intent == "oos"
    assert [(e.entity, e.text, e.value) for e in u.entities if e.source == "model"] == [
        ("amount_of_money", "77 pounds", "77.00 GBP")
    ]


def test_inference_does_not_import_sklearn(demo_model_dir: Path) -> None:
    loaded = modules_loaded_by_inference(
        demo_model_dir,
        "m.understand('I lost my card on 3rd of march, £20')\nm.understand_batch(['hi', 'bye'])",
        {"sklearn", "scipy", "skl2onnx", "onnx", "wordllama", "joblib"},
    )
    assert loaded == []
