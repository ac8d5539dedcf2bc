"""Tokenisation, cleaning and n-gram features."""

from __future__ import annotations

import numpy as np

from agents.nlu.features import HashIndex, NgramVocabulary, hash_ngrams
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
