"""Tokenisation, cleaning and n-gram features."""

from __future__ import annotations

import numpy as np
import pytest

from agents.nlu import features
from agents.nlu.features import HashIndex, NgramBatch, NgramVocabulary, hash_ngrams, poly_hash
from agents.nlu.text import MAX_TEXT_CHARS, clean_text, feature_words, tokenize


def test_clean_text_keeps_offsets_and_replaces_bad_characters() -> None:
    text = "a\x00b\u200bc\ud800d\n"
    cleaned = clean_text(text)
    assert len(cleaned) == len(text)
    assert cleaned == "a b\u200bc\ufffdd "
    assert clean_text(b"caf\xc3\xa9 \xff") == "café \ufffd"


def test_clean_text_truncates_to_the_documented_maximum() -> None:
    assert len(clean_text("x" * 100_000)) == MAX_TEXT_CHARS


def test_tokenize_splits_digits_letters_and_punctuation_with_offsets() -> None:
    text = "£27.50 on 3rd"
    tokens = tokenize(text)
    assert [t.text for t in tokens] == ["£", "27", ".", "50", "on", "3", "rd"]
    assert all(text[t.start : t.end] == t.text for t in tokens)


def test_feature_words_are_lower_case_word_runs() -> None:
    assert feature_words("Where's MY card?!") == ["where", "s", "my", "card"]


def test_hashes_are_deterministic_and_row_aligned() -> None:
    a = hash_ngrams(["hello world", "", "hi"])
    b = hash_ngrams(["hello world", "", "hi"])
    assert np.array_equal(a.char_hashes, b.char_hashes)
    assert set(a.word_rows.tolist()) == {0, 2}
    # "hello world": 2 unigrams + 1 bigram
    assert int(np.sum(a.word_rows == 0)) == 3


def test_vocabulary_transform_scales_each_block_to_unit_norm() -> None:
    vocab = NgramVocabulary.fit(["card arrived", "card lost", "lost card again"], char_min_df=1)
    batch = vocab.transform(["lost card", "unknown zzz", ""])
    rows, cols, values = batch.csr_parts(vocab.idf)
    dense = np.zeros((3, vocab.n_features), np.float32)
    np.add.at(dense, (rows, cols), values)
    n_words = vocab.word_keys.shape[0]
    assert np.isclose(np.linalg.norm(dense[0, :n_words]), 1.0, atol=1e-5)
    assert np.isclose(np.linalg.norm(dense[0, n_words:]), 1.0, atol=1e-5)
    assert not dense[2].any()


def test_hash_index_finds_exactly_the_known_keys() -> None:
    rng = np.random.default_rng(0)
    random_keys = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)
    keys = np.unique(np.concatenate((random_keys, np.arange(1, 300, dtype=np.uint64))))
    index = HashIndex(keys)
    queries = np.concatenate((keys[::-2], rng.integers(0, 2**63, 5000).astype(np.uint64)))
    expected = {int(k): i for i, k in enumerate(keys)}
    for batch in (queries, queries[:100]):  # the bucketed table, the binary search
        columns, found = index.lookup(batch)
        for q, col, ok in zip(batch.tolist(), columns.tolist(), found.tolist(), strict=True):
            assert ok == (q in expected)
            if ok:
                assert col == expected[q]
    empty = HashIndex(np.zeros(0, np.uint64))
    assert not empty.lookup(queries)[1].any() and not empty.lookup(queries[:100])[1].any()


_VARIED_TEXTS = [
    "lost card", "my card was lost again", "", "   ", "?!", "card_arrived lost-card",
    "İstanbul ÇAĞRI straße", "naïve café déjà vu", "中文 文本", "x" * 40, "a b c d e f g",
    "transfer £27.50 on 3rd", "unknown zzz qqq", "lost card lost card lost card",
]


def _fitted() -> NgramVocabulary:
    return NgramVocabulary.fit(
        ["card arrived", "card lost", "lost card again", "transfer £27.50 today", "café"],
        char_min_df=1,
    )


def _arrays(batch: NgramBatch) -> list[np.ndarray]:
    return [batch.word_rows, batch.word_cols, batch.char_rows, batch.char_cols,
            batch.word_scale, batch.char_scale]


@pytest.mark.parametrize("size", [1, 3, features._MEMO_MAX_ROWS])
def test_memoised_transform_equals_the_numpy_one_to_the_bit(size: int) -> None:
    """Small batches come from memoised words, large ones from hash_ngrams: same arrays."""
    vocab = _fitted()
    texts = _VARIED_TEXTS * 2
    for start in range(len(texts) - size + 1):
        batch = texts[start : start + size]
        for a, b in zip(
            _arrays(vocab._transform_memoised(batch)), _arrays(vocab._transform_numpy(batch)),
            strict=True,
        ):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_memoised_transform_survives_a_full_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = _fitted()
    expected = [vocab.transform([t]) for t in _VARIED_TEXTS]
    monkeypatch.setattr(features, "_MEMO_MAX", 3)
    fresh = _fitted()
    for text, want in zip(_VARIED_TEXTS, expected, strict=True):
        got = fresh.transform([text])
        for a, b in zip(_arrays(got), _arrays(want), strict=True):
            assert np.array_equal(a, b)
    all_words = {w for t in _VARIED_TEXTS for w in feature_words(t)}
    assert len(fresh._words) < len(all_words)  # it was cleared


def test_poly_hash_is_the_hash_of_hash_ngrams() -> None:
    h = hash_ngrams(["ab"])  # " ab ": 2-grams " a", "ab", "b "; 3-grams " ab", "ab "; " ab "
    assert h.char_hashes.tolist() == [
        poly_hash(g) for g in (" a", "ab", "b ", " ab", "ab ", " ab ")
    ]
    assert h.word_hashes.tolist() == [poly_hash(" ab ")]
