"""Folders built aside and renamed into place."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.files import atomic_directory


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_folder_appears_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as building:
        (building / "weights").write_text("1")
        assert not target.exists()
    assert (target / "weights").read_text() == "1"
    assert _names(tmp_path) == ["model"]


def test_a_failed_block_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as building:
        (building / "weights").write_text("new")
        raise RuntimeError("training failed")
    assert (target / "weights").read_text() == "old"
    assert _names(tmp_path) == ["model"]


def test_an_existing_folder_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_directory(target) as building:
        (building / "weights").write_text("new")
    assert _names(target) == ["weights"]
    assert _names(tmp_path) == ["model"]


def test_a_cache_keeps_what_a_concurrent_builder_finished_first(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with atomic_directory(target, replace=False) as building:
        (building / "mine").write_text("1")
        target.mkdir()  # another process got there first
        (target / "theirs").write_text("1")
    assert _names(target) == ["theirs"]
    assert _names(tmp_path) == ["cache"]
