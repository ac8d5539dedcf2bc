"""What a worker keeps on disk: only the unpacked folders of the versions its registry
holds (agents/bots/disk.py), fed through the ``bots`` follower as the topic would feed
it (no broker), with real folders in tmp_path."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agents.bots import BotRegistry, bundle_from_folders, unpack
from agents.bots.disk import ServedBotsDisk, version_folder
from agents.bots.errors import BundleError
from streams.codecs import AvroCodec
from tests.unit.bots.test_bundle import make_bot
from tests.unit.bots.test_follower import Worker

CODEC = AvroCodec("bot_version")


class Publisher:
    """Makes versions of tenants' bots as ``bots`` records: the reply tells them apart."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made = 0

    def record(self, tenant: str, reply: str, *, percent: int = 0) -> tuple[bytes, str]:
        self.made += 1
        bot, model = make_bot(self.tmp_path / "sources" / f"{self.made}", reply)
        bundle = replace(bundle_from_folders(tenant, bot, model), canary_percent=percent)
        return CODEC.encode(bundle.to_record()), bundle.version


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    made = Worker(tmp_path)
    yield made
    made.follower.stop()


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    return Publisher(tmp_path)


def on_disk(worker: Worker) -> set[str]:
    """The version folders under the worker's root (not its lock, nor what is set aside)."""
    root = worker.follower.root
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def held(worker: Worker) -> set[str]:
    return worker.follower.disk.held()


def holds(worker: Worker, tenant: str, version: str) -> bool:
    """Whether the registry holds ``version`` for ``tenant`` (``get`` falls back to the
    stable one)."""
    loaded = worker.registry.get(tenant, version)
    return loaded is not None and loaded.version == version


def test_publishing_over_keep_previous_removes_the_oldest_folder(
        worker: Worker, publisher: Publisher) -> None:
    (a, va), (b, vb), (c, vc) = (publisher.record("acme", r) for r in "ABC")
    worker.feed((b"acme", a))
    worker.feed((b"acme", b))
    assert on_disk(worker) == {va, vb}
    worker.feed((b"acme", c))
    assert worker.registry.versions("acme") == [vc, vb]  # keep_previous=1
    assert on_disk(worker) == {vb, vc}
    assert not (worker.follower.root / va).exists()
    # A conversation inside a flow on B still runs on it: the registry has it loaded.
    in_flow = worker.registry.for_conversation("acme", vb, in_flow=True, user_id="ann")
    assert in_flow is not None and in_flow.version == vb and "'B'" in in_flow.content


def test_a_version_published_again_after_its_folder_went_is_unpacked_again(
        worker: Worker, publisher: Publisher) -> None:
    (a, va), (b, _), (c, _) = (publisher.record("acme", r) for r in "ABC")
    for value in (a, b, c):
        worker.feed((b"acme", value))
    assert va not in on_disk(worker)
    worker.feed((b"acme", a))  # a rollback: the same files published again
    current = worker.registry.get("acme")
    assert current is not None and current.version == va and "'A'" in current.content
    assert (worker.follower.root / va / "bot" / "responses.yml").is_file()


def test_a_withdrawn_canary_stays_while_retired_and_goes_once_nothing_holds_it(
        worker: Worker, publisher: Publisher) -> None:
    stable, vs = publisher.record("acme", "stable")
    first, v1 = publisher.record("acme", "first canary", percent=10)
    second, v2 = publisher.record("acme", "second canary", percent=10)
    third, v3 = publisher.record("acme", "third canary", percent=10)
    worker.feed((b"acme", stable), (b"acme#canary", first))
    worker.feed((b"acme#canary", None))  # rolled back: kept for the tasks begun on it
    retired = worker.registry.retired("acme")
    assert retired is not None and retired.version == v1
    assert on_disk(worker) == {vs, v1}
    worker.feed((b"acme#canary", second))  # a new canary: the withdrawn one is still retired
    assert on_disk(worker) == held(worker) == {vs, v1, v2}
    worker.feed((b"acme#canary", third))  # replaces the second, which is retired now
    assert not holds(worker, "acme", v1)
    assert on_disk(worker) == {vs, v2, v3}


def test_a_promoted_canary_keeps_its_folder_and_an_unpublished_tenant_leaves_none(
        worker: Worker, publisher: Publisher) -> None:
    stable, vs = publisher.record("acme", "stable")
    canary, vc = publisher.record("acme", "canary", percent=50)
    worker.feed((b"acme", stable), (b"acme#canary", canary))
    promoted, same = publisher.record("acme", "canary")  # the same files, as stable
    assert same == vc
    worker.feed((b"acme", promoted), (b"acme#canary", None))
    assert on_disk(worker) == {vs, vc}
    worker.feed((b"acme", None))
    assert on_disk(worker) == set() and held(worker) == set()


def test_a_version_two_tenants_share_stays_while_either_holds_it(
        worker: Worker, publisher: Publisher) -> None:
    shared, vx = publisher.record("acme", "shared")
    shared_too, same = publisher.record("globex", "shared")
    assert same == vx  # same files: one version, one folder
    worker.feed((b"acme", shared), (b"globex", shared_too))
    for reply in ("acme 2", "acme 3"):
        worker.feed((b"acme", publisher.record("acme", reply)[0]))
    assert not holds(worker, "acme", vx) and holds(worker, "globex", vx)
    assert vx in on_disk(worker)  # globex is still served by it
    worker.feed((b"globex", None))
    assert vx not in on_disk(worker) and len(on_disk(worker)) == 2


def test_a_version_the_loader_refuses_leaves_no_folder(
        worker: Worker, publisher: Publisher) -> None:
    good, vg = publisher.record("acme", "good")
    broken, _ = publisher.record("acme", "broken")
    worker.feed((b"acme", good))
    worker.feed((b"acme", broken))
    assert worker.follower.failed == 1
    assert on_disk(worker) == {vg}


def test_start_up_removes_an_earlier_runs_folders_and_leftovers_only(
        tmp_path: Path, publisher: Publisher) -> None:
    earlier = Worker(tmp_path)
    old, current = publisher.record("acme", "old"), publisher.record("acme", "current")
    gone = publisher.record("globex", "unpublished since")
    earlier.feed((b"acme", old[0]), (b"globex", gone[0]))
    earlier.follower.stop()  # the worker stops; the topic moves on while it is down
    root = earlier.follower.root
    leftover = root / f".{current[1]}.building-123-abcd1234"  # an unpack cut short
    (leftover / "bot").mkdir(parents=True)
    (root / "notes.txt").write_text("an operator's notes")
    (root / "not-a-version").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the worker's")
    (root / ("f" * 64)).symlink_to(outside, target_is_directory=True)

    restarted = Worker(tmp_path)  # same data dir
    try:
        restarted.feed((b"acme", current[0]))  # the compacted topic: current versions only
        assert on_disk(restarted) >= {old[1], gone[1], current[1]}  # not caught up yet
        restarted.follower._follower.caught_up.set()  # as the topic follower does at the end
        assert restarted.follower.wait_caught_up(0)
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [current[1], "f" * 64, "not-a-version", "notes.txt"])
        assert (outside / "keep.txt").read_text() == "not the worker's"
        assert restarted.follower.disk.removed_count == 2
    finally:
        restarted.follower.stop()


def test_a_path_that_is_not_a_version_is_refused(tmp_path: Path, publisher: Publisher) -> None:
    root = tmp_path / "served-bots"
    for name in ("../outside", "/etc", "", "..", "F" * 64, "a" * 63, "a" * 64 + "/.."):
        with pytest.raises(BundleError, match="is not a bot version"):
            version_folder(root, name)
    registry: BotRegistry[str] = BotRegistry(lambda u: u.version)
    disk = ServedBotsDisk(registry, root)
    bot, model = make_bot(tmp_path / "src", "hi")
    forged = replace(bundle_from_folders("acme", bot, model), version="../outside")
    with disk.batch(), pytest.raises(BundleError):
        disk.unpack(forged)
    assert not (tmp_path / "outside").exists()


def test_a_removal_that_fails_is_logged_and_finished_by_the_next_sweep(
        worker: Worker, publisher: Publisher, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    (a, va), (b, vb), (c, vc) = (publisher.record("acme", r) for r in "ABC")
    worker.feed((b"acme", a))
    worker.feed((b"acme", b))

    rmtree = shutil.rmtree

    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        if ".removing-" in str(path):  # what the disk removes; unpacking still works
            raise PermissionError(13, "Permission denied", str(path))
        rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR):
        patched.setattr(shutil, "rmtree", refuse)
        worker.feed((b"acme", c))  # the follower goes on
    assert "bots.prune.failed" in caplog.text and worker.follower.disk.failed_count == 1
    assert worker.registry.versions("acme") == [vc, vb] and worker.follower.error is None
    assert on_disk(worker) == {vb, vc}  # A was renamed aside first: never half there
    assert [p.name for p in worker.follower.root.iterdir() if p.name.startswith(f".{va}")]
    worker.follower.disk.sweep()
    assert sorted(p.name for p in worker.follower.root.iterdir()) == sorted([vb, vc])


def test_a_worker_does_not_remove_a_folder_while_another_installs_from_the_same_root(
        tmp_path: Path) -> None:
    root = tmp_path / "served-bots"
    bundles = []
    for reply in "ABC":
        bot, model = make_bot(tmp_path / "src" / reply, reply)
        bundles.append(bundle_from_folders("acme", bot, model))
    registry: BotRegistry[str] = BotRegistry(lambda u: (u.bot_dir / "responses.yml").read_text())
    disk = ServedBotsDisk(registry, root, lock_wait_s=0.1)
    other = ServedBotsDisk(BotRegistry(lambda u: ""), root)
    for bundle in bundles[:2]:
        with disk.batch():
            registry.install("acme", disk.unpack(bundle))
    with other.batch():  # another worker is unpacking and loading
        with disk.batch():
            registry.install("acme", disk.unpack(bundles[2]))
        assert (root / bundles[0].version).is_dir()  # deferred, not removed under it
    with disk.batch():  # the next batch (or start-up sweep) does it
        pass
    assert not (root / bundles[0].version).exists()
    assert {p.name for p in root.iterdir() if not p.name.startswith(".")} == {
        bundles[1].version, bundles[2].version}


def test_unpack_is_unchanged_for_callers_without_a_disk(tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path / "src", "hi")
    bundle = bundle_from_folders("acme", bot, model)
    unpacked = unpack(bundle, tmp_path / "root")
    assert unpacked.folder == tmp_path / "root" / bundle.version


def test_the_withdrawn_canary_of_a_tenant_without_a_stable_version_stays_while_retired(
        worker: Worker, publisher: Publisher) -> None:
    canary, vc = publisher.record("acme", "canary only", percent=5)
    worker.feed((b"acme#canary", canary))
    worker.feed((b"acme#canary", None))
    assert holds(worker, "acme", vc)  # kept for the tasks begun on it
    assert on_disk(worker) == {vc}
    worker.feed((b"acme#canary", publisher.record("acme", "next", percent=5)[0]))
    worker.feed((b"acme#canary", None))  # the next one is retired instead
    assert not holds(worker, "acme", vc) and vc not in on_disk(worker)
    assert on_disk(worker) == held(worker) and len(on_disk(worker)) == 1
