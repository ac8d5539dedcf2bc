"""What a worker keeps on disk, through the real ``bots`` topic on the embedded broker:
the folders of the versions its registry holds, and after a restart only those of the
versions the compacted topic still serves (small bots: the disk, not the model, is
what is tested here; tests/unit/bots/test_pruning.py covers each case)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.bots import BotRegistry, BotsFollower, UnpackedBot, bundle_from_folders
from agents.bots.bundle import BotBundle
from agents.bots.publisher import BotPublisher
from kernel.settings import Settings
from streams.topics import BOTS
from tests.unit.bots.test_bundle import make_bot


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def reply_of(unpacked: UnpackedBot) -> str:
    return (unpacked.bot_dir / "responses.yml").read_text()


def current_is(registry: BotRegistry[str], tenant: str, version: str
               ) -> Callable[[], bool]:
    return lambda: registry.versions(tenant)[:1] == [version]


def folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def worker(settings: Settings, root: Path) -> tuple[BotRegistry[str], BotsFollower[str]]:
    registry: BotRegistry[str] = BotRegistry(reply_of, keep_previous=1)
    follower = BotsFollower(registry, root, bootstrap=settings.kafka_bootstrap,
                            topic=settings.topic(BOTS))
    follower.start()
    assert follower.wait_caught_up(30), follower.error
    return registry, follower


@pytest.mark.timeout(120)
def test_a_worker_keeps_only_the_versions_it_holds_across_a_restart(
        settings: Settings, tmp_path: Path) -> None:
    def version(tenant: str, reply: str) -> BotBundle:
        bot, model = make_bot(tmp_path / "sources" / f"{tenant}-{reply}", reply)
        return bundle_from_folders(tenant, bot, model)

    root = tmp_path / "worker" / "served-bots"
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS))
    registry, follower = worker(settings, root)
    try:
        a, b, c = (version("acme", reply) for reply in "ABC")
        shared, shared_too = version("acme", "shared"), version("globex", "shared")
        for bundle in (a, b, c):
            publisher.publish(bundle)
            publisher.flush()
            wait_for(current_is(registry, "acme", bundle.version), "each version")
        assert folders(root) == {b.version, c.version}
        publisher.publish(shared_too)
        publisher.publish(shared)
        publisher.flush()
        wait_for(current_is(registry, "acme", shared.version), "the shared version")
        assert folders(root) == {c.version, shared.version}
    finally:
        follower.stop()

    publisher.publish(version("acme", "D"))  # published while the worker is down
    publisher.flush()
    registry, follower = worker(settings, root)  # a restart on the same disk
    try:
        current = registry.get("acme")
        assert current is not None and "'D'" in current.content
        assert folders(root) == {current.version, shared.version}  # globex's, and acme's
        assert follower.error is None
    finally:
        follower.stop()
