"""The calibration figure ``parley nlu evaluate`` reports."""

from __future__ import annotations

import pytest

from agents.nlu.evaluate import expected_calibration_error


def test_confidence_that_matches_accuracy_has_no_calibration_error() -> None:
    # 80 % confident and right 8 times in 10; 30 % confident and right 3 times in 10
    confidence = [0.8] * 10 + [0.3] * 10
    correct = [True] * 8 + [False] * 2 + [True] * 3 + [False] * 7
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)


def test_overconfidence_is_the_gap_weighted_by_each_bin_share() -> None:
    # bin of 0.95: 4 examples, 2 right (gap 0.45); bin of 0.5: 6 examples, 3 right (gap 0)
    confidence = [0.95] * 4 + [0.5] * 6
    correct = [True, True, False, False, True, True, True, False, False, False]
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.4 * 0.45)


def test_full_confidence_falls_in_the_top_bin_and_no_examples_give_zero() -> None:
    assert expected_calibration_error([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    assert expected_calibration_error([], []) == 0.0
