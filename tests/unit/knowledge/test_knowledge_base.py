from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.encoders import embedder as embedder_module
from agents.encoders import wordllama
from agents.encoders.embedder import Embedder, build_embedder, resolve_kind
from agents.encoders.errors import EmbedderFormatError, EmbedderUnavailable
from agents.knowledge.documents import Document
from agents.knowledge.errors import IndexFormatError
from agents.knowledge.knowledge_base import KnowledgeBase

from .faq_data import faq_documents


def test_embedder_outputs_unit_vectors(embedder: Embedder) -> None:
    vectors = embedder.embed(["reset my password", "card declined", ""])
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-4)
    assert np.allclose(embedder.embed_query("reset my password"), vectors[0], atol=1e-5)


def test_wordllama_is_unavailable_without_its_wheel(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    def not_installed() -> None:
        raise RuntimeError("training needs the 'wordllama' package")

    monkeypatch.setattr(wordllama, "wordllama_files", not_installed)
    with pytest.raises(EmbedderUnavailable, match="pip install wordllama"):
        build_embedder("wordllama", tmp_path / "embedder")
    monkeypatch.setattr(embedder_module, "_minilm_dir", lambda: None)
    with pytest.raises(EmbedderUnavailable, match="neither is installed"):
        resolve_kind("auto")


def test_a_folder_without_an_embedder_says_how_to_rebuild_it(tmp_path: Path) -> None:
    with pytest.raises(EmbedderFormatError, match=r"no embedder\.json: rebuild the index"):
        Embedder(tmp_path)


@pytest.mark.parametrize(
    ("question", "doc_id"),
    [
        ("I forgot my password, how can I reset it", "reset-password"),
        ("my card got declined at the shop", "card-declined"),
        ("when will I get my refund back", "refund-time"),
        ("how much does sending money abroad cost", "intl-fees"),
    ],
)
def test_round_trip_finds_the_right_document(kb: KnowledgeBase, question: str,
                                             doc_id: str) -> None:
    hits = kb.search("default", question, k=3)
    assert hits[0].doc_id == doc_id
    assert len({h.doc_id for h in hits}) == len(hits)  # one hit per document
    assert hits[0].score >= hits[-1].score


def test_metadata_filters(kb: KnowledgeBase) -> None:
    hits = kb.search("default", "reset my password", filters={"product": "payments"})
    assert hits and {h.metadata["product"] for h in hits} == {"payments"}
    both = kb.search("default", "reset my password", filters={"product": ["account", "cards"]})
    assert {h.metadata["product"] for h in both} <= {"account", "cards"}
    assert kb.search("default", "reset", filters={"product": "nothing"}) == []


def test_tenants_are_isolated(kb: KnowledgeBase) -> None:
    kb.upsert(Document(id="only-b", title="Parking at the office", text="Level -2.",
                       tenant="tenant-b"))
    assert [h.doc_id for h in kb.search("tenant-b", "reset my password")] == ["only-b"]
    assert "only-b" not in {h.doc_id for h in kb.search("default", "parking office")}
    assert kb.search("nobody", "anything") == []


def test_update_and_delete(kb: KnowledgeBase) -> None:
    changed = Document(id="refund-time", title="How long does a refund take?",
                       text="Refunds now arrive within 24 hours.", metadata={"product": "payments"})
    assert kb.upsert(changed)
    assert not kb.upsert(changed)  # same content: nothing to do
    assert "24 hours" in kb.search("default", "refund duration")[0].text
    assert kb.delete("default", "refund-time")
    assert not kb.delete("default", "refund-time")
    assert "refund-time" not in {h.doc_id for h in kb.search("default", "refund", k=10)}


def test_save_and_open(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.upsert(Document(id="x", title="Other tenant", text="text", tenant="t2"))
    kb.save(tmp_path)
    reopened = KnowledgeBase.open(tmp_path)
    assert reopened.stats() == kb.stats()
    assert (tmp_path / "embedder" / "model.onnx").is_file()
    q = "my card got declined"
    assert [h.doc_id for h in reopened.search("default", q)] == \
        [h.doc_id for h in kb.search("default", q)]


def test_open_rejects_vectors_that_do_not_match_the_chunks(kb: KnowledgeBase,
                                                           tmp_path: Path) -> None:
    kb.save(tmp_path)
    vectors_file = tmp_path / "tenants" / "default" / "vectors.npz"
    vectors = np.load(vectors_file)
    np.savez(vectors_file, titles=vectors["titles"], passages=vectors["passages"][1:])
    with pytest.raises(IndexFormatError, match="passage vectors for"):
        KnowledgeBase.open(tmp_path)


def test_open_rejects_what_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match=r"no manifest\.json"):
        KnowledgeBase.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(IndexFormatError, match="format 99"):
        KnowledgeBase.open(tmp_path)


def test_confidence_is_low_for_unrelated_questions(kb: KnowledgeBase) -> None:
    related = kb.search("default", "How do I reset my password?")[0].score
    unrelated = kb.search("default", "best pizza recipe with mozzarella")[0].score
    assert related > 0.5 and unrelated < related


def test_many_documents_embed_in_batches(embedder: Embedder) -> None:
    knowledge = KnowledgeBase(embedder)
    calls: list[int] = []
    docs = [*faq_documents(), *faq_documents("t2")]
    changes = knowledge.upsert_many(docs, batch=4, on_batch=calls.append)
    assert changes.upserted == 12 and sum(calls) == 12 and changes.tenants == {"default", "t2"}


def test_searches_run_safely_while_another_thread_updates(embedder: Embedder) -> None:
    import threading

    knowledge = KnowledgeBase(embedder)
    knowledge.upsert_many(faq_documents())
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                hits = knowledge.search("default", "reset my password", k=3)
                assert hits and len({h.doc_id for h in hits}) == len(hits)
        except BaseException as exc:
            errors.append(exc)
            raise

    readers = [threading.Thread(target=search) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(30):
            knowledge.upsert(Document(id=f"extra-{i % 5}", title=f"Extra {i}", text=f"v{i}"))
            if i % 7 == 0:
                knowledge.delete("default", f"extra-{(i + 1) % 5}")
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors
    index = knowledge.tenant("default")
    assert index is not None
    index.refresh()
    expected = {e.document.id for e in index.documents()}
    assert {h.doc_id for h in knowledge.search("default", "extra", k=100)} == expected


def test_rank_reduced_first_stage_finds_the_same_answers(embedder: Embedder) -> None:
    from agents.knowledge.index import FirstStageWeights

    full = KnowledgeBase(embedder)
    reduced = KnowledgeBase(embedder, weights=FirstStageWeights(reduced_dim=4,
                                                                reduce_from_rows=1))
    for knowledge in (full, reduced):
        knowledge.upsert_many(faq_documents())
    index = reduced.tenant("default")
    assert index is not None and index._snapshot.first_stage_vectors.shape[1] == 4
    for question in ("I forgot my password", "card declined", "refund duration"):
        assert reduced.search("default", question)[0].doc_id == \
            full.search("default", question)[0].doc_id
