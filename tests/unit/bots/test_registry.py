"""The worker's bot registry: load first, then swap; keep the version a conversation is on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agents.bots import BotRegistry, LoadedBot, UnpackedBot


def version(name: str) -> UnpackedBot:
    return UnpackedBot(version=name * 8, name="bank", folder=Path("/nowhere") / name)


class Loader:
    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.fail: set[str] = set()

    def __call__(self, unpacked: UnpackedBot) -> str:
        if unpacked.version in self.fail:
            raise RuntimeError(f"cannot load {unpacked.version}")
        self.loaded.append(unpacked.version)
        return f"model of {unpacked.version}"


def test_a_new_version_replaces_the_current_one_and_the_previous_is_kept() -> None:
    loader = Loader()
    registry: BotRegistry[str] = BotRegistry(loader, keep_previous=1)
    assert registry.get("acme") is None
    first = registry.install("acme", version("a"), published_at_ms=10)
    assert registry.get("acme") is first and first.content == "model of aaaaaaaa"
    second = registry.install("acme", version("b"))
    assert registry.get("acme") is second
    assert registry.get("acme", "aaaaaaaa") is first  # still held
    assert registry.versions("acme") == ["bbbbbbbb", "aaaaaaaa"]
    registry.install("acme", version("c"))
    assert registry.versions("acme") == ["cccccccc", "bbbbbbbb"]  # a is let go
    current = registry.get("acme", "aaaaaaaa")
    assert current is not None and current.version == "cccccccc"


def test_publishing_the_same_version_again_changes_nothing() -> None:
    loader = Loader()
    registry: BotRegistry[str] = BotRegistry(loader)
    first = registry.install("acme", version("a"))
    assert registry.install("acme", version("a")) is first
    assert loader.loaded == ["aaaaaaaa"]


def test_going_back_to_a_held_version_reuses_it() -> None:
    loader = Loader()
    registry: BotRegistry[str] = BotRegistry(loader, keep_previous=2)
    registry.install("acme", version("a"))
    registry.install("acme", version("b"))
    registry.install("acme", version("a"))  # a rollback
    assert registry.versions("acme") == ["aaaaaaaa", "bbbbbbbb"]
    assert loader.loaded == ["aaaaaaaa", "bbbbbbbb"]


def test_tenants_on_the_same_version_share_one_load() -> None:
    loader = Loader()
    registry: BotRegistry[str] = BotRegistry(loader)
    one = registry.install("acme", version("a"))
    two = registry.install("globex", version("a"))
    assert one.content is two.content and loader.loaded == ["aaaaaaaa"]
    assert (one.tenant_id, two.tenant_id) == ("acme", "globex")
    assert registry.tenants() == ["acme", "globex"]


def test_a_version_that_fails_to_load_never_replaces_a_working_one() -> None:
    loader = Loader()
    registry: BotRegistry[str] = BotRegistry(loader)
    working = registry.install("acme", version("a"))
    loader.fail.add("bbbbbbbb")
    with pytest.raises(RuntimeError, match="cannot load"):
        registry.install("acme", version("b"))
    assert registry.get("acme") is working and registry.versions("acme") == ["aaaaaaaa"]


def test_unpublishing_removes_the_tenant_only() -> None:
    registry: BotRegistry[str] = BotRegistry(Loader())
    registry.install("acme", version("a"))
    registry.install("globex", version("b"))
    changes: list[tuple[str, str | None]] = []
    registry.on_change(lambda t, b: changes.append((t, b.version if b else None)))
    assert registry.remove("acme") and not registry.remove("acme")
    assert registry.get("acme") is None and registry.get("globex") is not None
    registry.install("globex", version("c"))
    assert changes == [("acme", None), ("globex", "cccccccc")]


@pytest.mark.parametrize(("recorded", "in_flow", "expected"), [
    ("aaaaaaaa", True, "aaaaaaaa"),    # mid-task on the previous version: finish on it
    ("aaaaaaaa", False, "bbbbbbbb"),   # between tasks: move to the current version
    ("", False, "bbbbbbbb"),           # a new conversation
    ("zzzzzzzz", True, "bbbbbbbb"),    # a version this worker does not hold
])
def test_the_version_a_conversation_turn_runs_on(recorded: str, in_flow: bool,
                                                 expected: str) -> None:
    registry: BotRegistry[str] = BotRegistry(Loader())
    registry.install("acme", version("a"))
    registry.install("acme", version("b"))
    chosen = registry.for_conversation("acme", recorded, in_flow)
    assert chosen is not None and chosen.version == expected
    assert registry.for_conversation("nobody", recorded, in_flow) is None


def test_readers_see_a_whole_version_while_it_is_swapped() -> None:
    """A reader on another thread sees the old version or the new one, never none."""
    registry: BotRegistry[str] = BotRegistry(Loader(), keep_previous=0)
    registry.install("acme", version("a"))
    stop = threading.Event()
    seen: list[LoadedBot[str] | None] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(registry.get("acme"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            registry.install("acme", version("b" if i % 2 else "a"))
    finally:
        stop.set()
        reader.join()
    assert seen and all(b is not None and b.content.startswith("model of") for b in seen)
