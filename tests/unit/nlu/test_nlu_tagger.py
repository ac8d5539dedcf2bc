"""Decoding the entity tagger's per-token tag scores into typed runs."""

from __future__ import annotations

import numpy as np

from agents.nlu.tagger import TagDecoder, TypeScores
from tests.unit.nlu.cases import TAGS, tag_scores


def test_type_scores_take_the_best_of_begin_and_inside_per_type() -> None:
    types = TypeScores(TAGS)
    assert types.labels == ("date", "date_to", "person")
    by_type = types.of(tag_scores([{"B-date": 0.5, "I-date": 0.7, "I-person": 2.0}]))
    assert by_type.tolist() == [[0.699999988079071, -1.0, 2.0]]


def test_a_run_is_the_tokens_between_outside_tags() -> None:
    scores = tag_scores([
        {"O": 1.0}, {"B-date": 1.0}, {"I-date": 1.0}, {"O": 1.0}, {"I-person": 1.0},
    ])
    # an I- tag with no B- before it still starts a run
    assert TagDecoder(TAGS).runs(scores) == [(1, 3, "date"), (4, 5, "person")]


def test_a_begin_tag_of_another_type_splits_a_run_and_one_of_the_same_type_does_not() -> None:
    decoder = TagDecoder(TAGS)
    split = tag_scores([{"B-date": 1.0}, {"I-date": 1.0}, {"B-person": 1.0}, {"I-person": 1.0}])
    assert decoder.runs(split) == [(0, 2, "date"), (2, 4, "person")]
    joined = tag_scores([{"B-date": 1.0}, {"B-date": 1.0}, {"I-date": 1.0}])
    assert decoder.runs(joined) == [(0, 3, "date")]


def test_a_run_takes_the_type_with_the_best_summed_score_over_its_tokens() -> None:
    # token by token the types flicker; summed over the run, date_to wins
    scores = tag_scores([
        {"B-date": 2.0, "B-date_to": 1.9},
        {"I-date_to": 3.0, "I-date": 0.0},
        {"I-date": 1.5, "I-date_to": 1.4},
    ])
    assert TagDecoder(TAGS).runs(scores) == [(0, 3, "date_to")]


def test_a_batch_decodes_as_its_messages_do_one_by_one() -> None:
    rng = np.random.default_rng(7)
    lengths = [0, 5, 1, 12, 0, 7, 3]
    messages = [rng.normal(size=(n, len(TAGS))).astype(np.float32) for n in lengths]
    decoder = TagDecoder(TAGS)
    batch = decoder.runs_batch(np.concatenate(messages), lengths)
    assert batch == [decoder.runs(m) for m in messages]
    assert any(batch)  # the random scores do make runs


def test_scores_with_no_entity_token_make_no_run() -> None:
    decoder = TagDecoder(TAGS)
    assert decoder.runs(tag_scores([{"O": 1.0}] * 4)) == []
    assert decoder.runs(np.zeros((0, len(TAGS)), np.float32)) == []
    assert decoder.runs_batch(tag_scores([{"O": 1.0}] * 3), [2, 0, 1]) == [[], [], []]
