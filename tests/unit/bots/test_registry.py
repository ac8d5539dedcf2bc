"""The worker's bot registry: load first, then swap; keep the version a conversation is on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agents.bots import BotRegistry, LoadedBot, UnpackedBot
from kernel.rollout import rollout_bucket


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
    chosen = registry.for_conversation("acme", recorded, in_flow, user_id="ann")
    assert chosen is not None and chosen.version == expected
    assert registry.for_conversation("nobody", recorded, in_flow, user_id="ann") is None


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


# --- canaries -----------------------------------------------------------------------
USERS = [f"user-{i}" for i in range(200)]


def users_in(percent: int) -> list[str]:
    """Users of acme whose bucket is below ``percent``, by the one bucket function."""
    return [u for u in USERS if rollout_bucket("acme", u) < percent]


def users_out(percent: int) -> list[str]:
    return [u for u in USERS if rollout_bucket("acme", u) >= percent]


def with_canary(percent: int = 30) -> BotRegistry[str]:
    registry: BotRegistry[str] = BotRegistry(Loader(), keep_previous=1)
    registry.install("acme", version("s"))
    registry.install_canary("acme", version("c"), percent)
    return registry


def test_users_below_the_percentage_start_new_tasks_on_the_canary() -> None:
    registry = with_canary(30)
    for user in users_in(30):
        chosen = registry.for_conversation("acme", "", False, user_id=user)
        assert chosen is not None and chosen.version == "cccccccc", user
    for user in users_out(30):
        chosen = registry.for_conversation("acme", "", False, user_id=user)
        assert chosen is not None and chosen.version == "ssssssss", user
    assert registry.get("acme") is not None and registry.get("acme").version == "ssssssss"  # type: ignore[union-attr]
    share = len(users_in(30)) / len(USERS)
    assert 0.2 < share < 0.4  # about the percentage asked for


def test_a_task_begun_on_stable_finishes_on_stable_after_a_canary_arrives() -> None:
    registry: BotRegistry[str] = BotRegistry(Loader(), keep_previous=1)
    registry.install("acme", version("s"))
    user = users_in(50)[0]
    registry.install_canary("acme", version("c"), 50)
    inside = registry.for_conversation("acme", "ssssssss", True, user_id=user)
    assert inside is not None and inside.version == "ssssssss"  # the form goes on
    between = registry.for_conversation("acme", "ssssssss", False, user_id=user)
    assert between is not None and between.version == "cccccccc"  # the next task


def test_a_task_begun_on_the_canary_finishes_on_it_after_a_rollback() -> None:
    registry = with_canary(50)
    user = users_in(50)[0]
    assert registry.withdraw_canary("acme") and registry.canary("acme") is None
    inside = registry.for_conversation("acme", "cccccccc", True, user_id=user)
    assert inside is not None and inside.version == "cccccccc"
    between = registry.for_conversation("acme", "cccccccc", False, user_id=user)
    assert between is not None and between.version == "ssssssss"
    assert not registry.withdraw_canary("acme")  # nothing left to withdraw


def test_raising_the_percentage_keeps_the_users_already_in() -> None:
    registry = with_canary(10)
    before = {u for u in USERS
              if registry.for_user("acme", u).version == "cccccccc"}  # type: ignore[union-attr]
    same = registry.install_canary("acme", version("c"), 60)  # same version: no reload
    after = {u for u in USERS
             if registry.for_user("acme", u).version == "cccccccc"}  # type: ignore[union-attr]
    assert same.percent == 60 and before < after and before == set(users_in(10))


def test_promoting_makes_the_canary_every_user_s_version_without_a_reload() -> None:
    loader = Loader()
    registry: BotRegistry[str] = BotRegistry(loader, keep_previous=1)
    registry.install("acme", version("s"))
    registry.install_canary("acme", version("c"), 30)
    registry.install("acme", version("c"))  # what `parley bot promote` publishes
    assert registry.canary("acme") is None  # the stable record made it redundant
    assert not registry.withdraw_canary("acme")  # ... so the tombstone after it is a no-op
    assert {registry.for_user("acme", u).version for u in USERS} == {"cccccccc"}  # type: ignore[union-attr]
    inside = registry.for_conversation("acme", "ssssssss", True, user_id=users_out(30)[0])
    assert inside is not None and inside.version == "ssssssss"  # the old stable is held
    assert loader.loaded == ["ssssssss", "cccccccc"]


def test_a_canary_without_a_stable_version_leaves_the_others_to_the_worker() -> None:
    registry: BotRegistry[str] = BotRegistry(Loader())
    registry.install_canary("acme", version("c"), 50)
    assert registry.for_user("acme", users_out(50)[0]) is None  # the worker's own bot
    chosen = registry.for_user("acme", users_in(50)[0])
    assert chosen is not None and chosen.version == "cccccccc"
    assert registry.tenants() == ["acme"]


def test_a_withdrawn_canary_of_a_tenant_without_a_stable_version_is_still_held() -> None:
    """Its tasks may still finish on it: everything() (what a worker keeps on disk and
    whose integrations it runs) lists it, and unpublishing the tenant drops it."""
    registry: BotRegistry[str] = BotRegistry(Loader())
    registry.install_canary("acme", version("c"), 50)
    assert registry.withdraw_canary("acme")
    assert registry.tenants() == []  # nobody starts a task on it any more
    assert [b.version for b in registry.everything()] == ["cccccccc"]
    held = registry.for_conversation("acme", "cccccccc", in_flow=True, user_id="u")
    assert held is not None and held.version == "cccccccc"
    assert registry.remove("acme")
    assert registry.everything() == [] and registry.retired("acme") is None
    assert not registry.remove("acme")


def test_a_canary_that_fails_to_load_changes_nothing() -> None:
    loader = Loader()
    registry = BotRegistry(loader)
    registry.install("acme", version("s"))
    loader.fail.add("cccccccc")
    with pytest.raises(RuntimeError, match="cannot load"):
        registry.install_canary("acme", version("c"), 30)
    assert registry.canary("acme") is None
    with pytest.raises(ValueError, match="1-99"):
        registry.install_canary("acme", version("s"), 100)
