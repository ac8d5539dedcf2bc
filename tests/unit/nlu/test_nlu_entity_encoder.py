"""The entity encoder: MiniLM fine-tuned on the tagger's BIO tags (``--entity-encoder``)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from agents.encoders.embedder import (
    minilm_checkpoint,
    pad_ids,
    plain_tokenizer,
    quantize_int8,
)
from agents.nlu.cli import nlu
from agents.nlu.data import Example, load_examples
from agents.nlu.entity_encoder import MIN_STEPS, EntityEncoder, build_entity_encoder, first_pieces
from agents.nlu.errors import ManifestError
from agents.nlu.model import NLUModel
from agents.nlu.tagger import encode_bio
from agents.nlu.text import Token, clean_text, tokenize
from agents.onnx_runtime import cpu_session
from examples import DEMO
from tests.unit.nlu.cases import modules_loaded_by_inference, write_demo_slice
from tests.unit.wheels import needs_minilm

torch = pytest.importorskip("torch", reason="fine-tuning needs PyTorch: pip install 'parley[tune]'")

from agents.encoders.onnx_graphs import bert_token_graph  # noqa: E402
from agents.nlu import finetune  # noqa: E402
from agents.nlu.finetune import encoder_module  # noqa: E402

pytestmark = [needs_minilm, pytest.mark.slow, pytest.mark.timeout(900)]  # fine-tunes MiniLM


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Tokenizer:
    return plain_tokenizer(minilm_checkpoint()[2])


ENTITY_INTENTS = {"product_availability", "order_card", "card_lost", "open_account",
                  "check_balance", "greet"}
"""The demo intents with most entity examples (card, account and product types)."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo slice with an entity encoder, trained through the CLI."""
    folder = tmp_path_factory.mktemp("nlu-entities")
    data = write_demo_slice(folder / "slice.jsonl", ENTITY_INTENTS)
    out = folder / "model"
    result = CliRunner().invoke(nlu, [
        "train", "--data", str(data), "--out", str(out),
        "--entity-encoder", "minilm-tuned", "--entity-tune-epochs", "2",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_each_word_maps_to_its_first_wordpiece(minilm_tokenizer: Tokenizer) -> None:
    text = "Paid Kawamoto-san £25.50 at 7p.m."
    tokens = tokenize(text)
    enc = minilm_tokenizer.encode(text)
    at = first_pieces(enc.offsets, tokens)
    assert len(at) == len(tokens) and all(p > 0 for p in at)  # never [CLS] (piece 0)
    for token, piece in zip(tokens, at, strict=True):
        # the first piece overlapping the word ("£2" covers "£" and the start of "25")
        overlaps = [k for k, (a, b) in enumerate(enc.offsets) if a < token.end and b > token.start]
        assert piece == overlaps[0], (token, enc.tokens[piece])
    # pieces cut off (a token limit) leave the words after them unmapped
    assert first_pieces(enc.offsets[:3], tokens)[-1] == -1
    assert first_pieces([], tokens) == [-1] * len(tokens)


def test_the_token_graph_computes_what_the_torch_twin_computes(
    minilm_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    weights, config, _ = minilm_checkpoint()
    rng = np.random.default_rng(0)
    head_weight = rng.normal(0, 0.2, (5, 384)).astype(np.float32)
    head_bias = rng.normal(0, 0.2, 5).astype(np.float32)
    path = tmp_path / "tokens.onnx"
    path.write_bytes(bert_token_graph(weights, head_weight, head_bias, layers=6, heads=12))
    texts = ["transfer 50 euros to Anna tomorrow", "hi", "my debit card was stolen last night"]
    ids, mask = pad_ids([e.ids for e in minilm_tokenizer.encode_batch(texts)])
    feeds = {"input_ids": ids, "attention_mask": mask}
    onnx_out = cpu_session(path, 1).run(["log_probs"], feeds)[0]
    module = encoder_module(weights, config).eval()
    with torch.no_grad():
        hidden = module.hidden(torch.from_numpy(ids), torch.from_numpy(mask))
        expected = torch.log_softmax(hidden @ torch.from_numpy(head_weight).T
                                     + torch.from_numpy(head_bias), dim=-1).numpy()
    real = mask.astype(bool)  # padding positions are not compared
    np.testing.assert_allclose(onnx_out[real], expected[real], atol=1e-4)


def test_the_model_folder_holds_the_encoder_with_the_taggers_tags(model_dir: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["training"]["entity_encoder"] == "minilm-tuned"
    assert manifest["training"]["entity_tune_epochs"] == 2
    meta = json.loads((model_dir / "entities" / "entity_encoder.json").read_text())
    assert meta["tags"] == manifest["tagger_tags"] and meta["kind"] == "minilm-tuned"
    # 96 messages are 6 batches: epochs enough for the minimum number of steps
    assert meta["epochs"] == math.ceil(MIN_STEPS / 6)
    model = NLUModel.load(model_dir)
    assert model.has_entity_encoder and model.has_transformer and not model.has_context_encoder


def _demo_entity_messages() -> tuple[list[Example], list[str], list[list[Token]]]:
    examples = [e for e in load_examples([DEMO.nlu])
                if e.entities and e.intent in ENTITY_INTENTS]
    texts = [clean_text(e.text) for e in examples]
    return examples, texts, [tokenize(t) for t in texts]


def test_the_encoder_learns_the_entity_tags(model_dir: Path) -> None:
    """On its own (argmax of its scores), the encoder tags the demo's entity words right."""
    encoder = EntityEncoder(model_dir / "entities")
    examples, texts, token_lists = _demo_entity_messages()
    gold = [tag for e, tokens in zip(examples, token_lists, strict=True)
            for tag in encode_bio(tokens, [(s.start, s.end, s.entity) for s in e.entities or ()])]
    predicted = [encoder.tags[i] for i in encoder.scores(texts, token_lists).argmax(axis=1)]
    entity_words = [(g, p) for g, p in zip(gold, predicted, strict=True) if g != "O"]
    assert sum(g == p for g, p in entity_words) >= 0.8 * len(entity_words)
    assert sum(g == p for g, p in zip(gold, predicted, strict=True)) >= 0.95 * len(gold)


def test_the_int8_encoder_tags_as_the_fp32_one(model_dir: Path, tmp_path: Path) -> None:
    int8 = shutil.copytree(model_dir / "entities", tmp_path / "entities")
    quantize_int8(int8 / "model.onnx")
    _, texts, token_lists = _demo_entity_messages()
    fp32_tags = EntityEncoder(model_dir / "entities").scores(texts, token_lists).argmax(axis=1)
    int8_tags = EntityEncoder(int8).scores(texts, token_lists).argmax(axis=1)
    assert np.mean(fp32_tags == int8_tags) >= 0.98


def test_the_int8_kind_writes_a_quantised_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tags = ["O", "B-card_type", "I-card_type"]
    untrained = (minilm_checkpoint()[0], np.zeros((3, 384), np.float32), np.zeros(3, np.float32))
    monkeypatch.setattr(finetune, "fine_tune_token_scorer", lambda *args, **kwargs: untrained)
    texts = ["my debit card", "hello"]
    token_lists = [tokenize(t) for t in texts]
    folder = build_entity_encoder(
        tmp_path / "entities", texts, token_lists, [[0, 1, 0], [0]], tags,
        kind="minilm-tuned-int8", epochs=1, seed=0, threads=1,
    )
    assert json.loads((folder / "entity_encoder.json").read_text())["kind"] == "minilm-tuned-int8"
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) >= 36
    scores = EntityEncoder(folder).scores(texts, token_lists)
    assert scores.shape == (4, 3) and np.allclose(scores, 0.4 * np.log(1 / 3), atol=1e-4)
    with pytest.raises(ValueError, match="unknown entity encoder"):
        build_entity_encoder(tmp_path / "other", texts, token_lists, [[0, 1, 0], [0]], tags,
                             kind="minilm", epochs=1, seed=0, threads=1)


@pytest.mark.parametrize(("text", "entity", "value"), [
    ("my debit card was stolen", "card_type", "debit"),
    ("what's in my savings account", "account_type", "savings"),
])  # fmt: skip
def test_a_model_with_the_encoder_finds_entities(
    model_dir: Path, text: str, entity: str, value: str
) -> None:
    found = NLUModel.load(model_dir).understand(text).entities
    assert [(e.entity, e.text) for e in found if e.source == "model"] == [(entity, value)]


def test_bad_input_gets_a_defined_result(model_dir: Path) -> None:
    model = NLUModel.load(model_dir)
    texts = ["", "🙂🙂", "\x00\x07 card \ufffd", "debit " * 20_000, "ok"]
    results = model.understand_batch(texts)
    assert [r.entities for r in results[:2]] == [(), ()]
    assert len(results) == len(texts)
    # words past the encoder's token limit are left to the tagger alone
    encoder = EntityEncoder(model_dir / "entities")
    tokens = tokenize("debit " * 300)
    scores = encoder.scores(["debit " * 300], [tokens])
    assert scores.shape == (300, len(encoder.tags))
    assert np.any(scores[:100] != 0) and not np.any(scores[200:])


def test_an_encoder_with_other_tags_than_the_tagger_is_refused(
    model_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    meta_path = copy / "entities" / "entity_encoder.json"
    meta = json.loads(meta_path.read_text())
    meta["tags"] = list(reversed(meta["tags"]))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match="tags"):
        NLUModel.load(copy)


def test_inference_with_the_encoder_does_not_import_torch(model_dir: Path) -> None:
    loaded = modules_loaded_by_inference(
        model_dir, "m.understand_batch(['hi', 'my debit card is gone'])",
        {"sklearn", "torch", "onnx", "wordllama"}, timeout=120,
    )
    assert loaded == []
