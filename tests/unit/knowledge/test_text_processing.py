from __future__ import annotations

import numpy as np

from agents.knowledge.chunking import chunk_document, split_sentences
from agents.knowledge.documents import Document
from agents.knowledge.lexical import Bm25Field, analyze, stem


def test_analyzer_lowercases_stems_and_drops_stopwords() -> None:
    assert analyze("How do I delete my Facebook accounts?") == ["delete", "facebook", "account"]
    assert analyze("C++ and node.js libraries") == ["c++", "node.js", "library"]
    assert stem("stopped") == "stop" and stem("running") == "run" and stem("class") == "class"


def test_bm25_prefers_rare_matching_terms_and_ignores_unknown_ones() -> None:
    field = Bm25Field.build([analyze("reset password"), analyze("password policy rules"),
                             analyze("card declined")])
    scores = field.scores(analyze("how to reset a password"))
    assert scores.argmax() == 0 and scores[2] == 0
    assert np.all(field.scores(["zzz"]) == 0)
    assert 0 < scores.max() <= field.max_score(analyze("reset password"))


def test_bm25_empty() -> None:
    field = Bm25Field.build([])
    assert field.scores(["x"]).shape == (0,)


def test_short_document_is_one_chunk_with_title() -> None:
    doc = Document(id="d", title="Title", text="Short text.")
    chunks = chunk_document(doc)
    assert len(chunks) == 1
    assert chunks[0].embed_text == "Title. Short text."


def test_long_document_splits_on_boundaries_within_limits() -> None:
    paragraph = " ".join(f"Sentence number {i} is here." for i in range(60))
    doc = Document(id="d", title="T", text=f"Intro paragraph.\n\n{paragraph}\n\nOutro.")
    chunks = chunk_document(doc, max_words=50, overlap=10)
    assert len(chunks) > 4
    assert all(len(c.text.split()) <= 50 for c in chunks)
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
    joined = " ".join(c.text for c in chunks)
    assert "Intro paragraph." in joined and "Outro." in joined and "number 59" in joined


def test_a_single_huge_sentence_is_windowed_with_overlap() -> None:
    doc = Document(id="d", title="T", text=" ".join(f"w{i}" for i in range(100)))
    chunks = chunk_document(doc, max_words=40, overlap=10)
    assert chunks[0].text.split()[-10:] == chunks[1].text.split()[:10]


def test_sentences() -> None:
    assert split_sentences("One. Two! three? Four") == ["One.", "Two! three?", "Four"]
