"""The demo index: cached under a key of everything it is built from, safe to build concurrently."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agents.encoders import embedder
from agents.knowledge import knowledge_base
from agents.knowledge.demo import DEMO_TENANT, demo_index_key, ensure_demo_index
from agents.knowledge.knowledge_base import FORMAT_VERSION, KnowledgeBase
from examples import DEMO


@pytest.fixture
def wordllama_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` picks wordllama: it builds in well under a second."""
    resolve = embedder.resolve_kind
    monkeypatch.setattr(embedder, "resolve_kind",
                        lambda kind: "wordllama" if kind == "auto" else resolve(kind))


def test_the_key_covers_the_format_version_and_the_embedder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = demo_index_key(DEMO.knowledge, "wordllama")
    assert key == demo_index_key(DEMO.knowledge, "wordllama")
    assert key != demo_index_key(DEMO.knowledge, "minilm-int8")
    monkeypatch.setattr(embedder, "BUILD_VERSION", embedder.BUILD_VERSION + 1)
    assert demo_index_key(DEMO.knowledge, "wordllama") != key
    monkeypatch.undo()
    monkeypatch.setattr(knowledge_base, "FORMAT_VERSION", FORMAT_VERSION + 1)
    assert demo_index_key(DEMO.knowledge, "wordllama") != key


@pytest.mark.usefixtures("wordllama_auto")
def test_an_index_of_another_format_is_rebuilt_not_reused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = ensure_demo_index(tmp_path, DEMO.knowledge)
    assert ensure_demo_index(tmp_path, DEMO.knowledge) == first
    assert KnowledgeBase.open(first).embedder.kind == "wordllama"

    monkeypatch.setattr(knowledge_base, "FORMAT_VERSION", FORMAT_VERSION + 1)
    second = ensure_demo_index(tmp_path, DEMO.knowledge)
    assert second != first
    assert DEMO_TENANT in KnowledgeBase.open(second).tenants()


class _Unused:
    def upsert_many(self, docs: Any) -> None:
        pass

    def save(self) -> None:
        pass


@pytest.mark.usefixtures("wordllama_auto")
@pytest.mark.parametrize("fails", ["while building", "renaming into place"])
def test_another_process_finishing_first_wins_the_race(
        fails: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / f"demo-{demo_index_key(DEMO.knowledge, 'wordllama')}"

    def create_while_another_process_finishes(path: Path, **kwargs: Any) -> Any:
        target.mkdir()
        (target / "manifest.json").write_text("{}")
        if fails == "while building":
            raise OSError("No space left on device")
        return _Unused()  # our rename then finds the other process's folder in place

    monkeypatch.setattr(KnowledgeBase, "create", create_while_another_process_finishes)
    with caplog.at_level(logging.INFO, logger="agents.knowledge.demo"):
        assert ensure_demo_index(tmp_path, DEMO.knowledge) == target
    assert "built" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary folder left


@pytest.mark.usefixtures("wordllama_auto")
def test_a_failed_build_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def create(path: Path, **kwargs: Any) -> Any:
        raise OSError("No space left on device")

    monkeypatch.setattr(KnowledgeBase, "create", create)
    with pytest.raises(OSError, match="No space left"):
        ensure_demo_index(tmp_path, DEMO.knowledge)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("wordllama_auto")
def test_the_index_a_worker_serves(tmp_path: Path) -> None:
    from agents.knowledge.demo import resolve_kb_index
    from agents.knowledge.settings import KnowledgeSettings
    from kernel.settings import Settings

    settings = Settings.from_env({}, data_dir=tmp_path)
    assert resolve_kb_index(settings.replace(knowledge=False), DEMO.knowledge) is None
    configured = KnowledgeSettings.from_env({}, index_dir="/srv/kb")
    assert resolve_kb_index(settings, DEMO.knowledge, configured) == Path("/srv/kb")
    demo = resolve_kb_index(settings, DEMO.knowledge, KnowledgeSettings.from_env({}))
    assert demo == tmp_path / "kb" / f"demo-{demo_index_key(DEMO.knowledge, 'wordllama')}"
