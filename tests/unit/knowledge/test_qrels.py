"""Relevance files as ``parley kb evaluate`` reads them: plain TSV and BEIR's, with a header."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.knowledge.evaluate import load_qrels


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qrels.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_without_header_keeps_relevant_grades(tmp_path: Path) -> None:
    path = _write(tmp_path, "q1\td1\t1\nq1\td2\t0\nq2\td3\t2\n\nq3\td4\n")
    assert load_qrels(path) == {"q1": {"d1": 1}, "q2": {"d3": 2}, "q3": {"d4": 1}}


def test_a_beir_header_row_is_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t2\n")
    assert load_qrels(path) == {"q1": {"d1": 1}, "q2": {"d3": 2}}


def test_a_bad_grade_after_the_first_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\thigh\n")
    with pytest.raises(ValueError, match=rf"{path}:3: the grade 'high' is not a whole number"):
        load_qrels(path)


def test_a_line_without_a_document_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "q1\td1\t1\nq2\n")
    with pytest.raises(ValueError, match=rf"{path}:2: expected query_id<TAB>doc_id"):
        load_qrels(path)
