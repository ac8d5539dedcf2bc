"""What a worker's ``bots`` follower does with each record of a batch (no broker: the
records are handed to it as the topic follower would)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agents.bots import BotRegistry, BotsFollower, UnpackedBot, bundle_from_folders
from agents.bots.follower import consumer_limits
from streams.codecs import AvroCodec
from tests.unit.bots.test_bundle import make_bot


@dataclass
class FakeMessage:
    """The part of confluent_kafka.Message the follower reads."""

    _key: bytes
    _value: bytes | None
    _offset: int

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class Worker:
    def __init__(self, tmp_path: Path) -> None:
        self.fail: set[str] = set()
        self.registry: BotRegistry[str] = BotRegistry(self.load)
        self.follower: BotsFollower[str] = BotsFollower(
            self.registry, tmp_path / "served", bootstrap="127.0.0.1:1", topic="bots")
        self.offset = 0

    def load(self, unpacked: UnpackedBot) -> str:
        text = (unpacked.bot_dir / "responses.yml").read_text()
        if "broken" in text:
            raise ValueError("the flows refer to an unknown response")
        return text

    def feed(self, *records: tuple[bytes, bytes | None]) -> None:
        batch = []
        for key, value in records:
            self.offset += 1
            batch.append(FakeMessage(key, value, self.offset))
        self.follower._apply_batch(batch)  # type: ignore[arg-type]


@pytest.fixture
def worker(tmp_path: Path) -> Any:
    made = Worker(tmp_path)
    yield made
    made.follower.stop()


def version_value(tmp_path: Path, tenant: str, reply: str) -> tuple[bytes, str]:
    bot, model = make_bot(tmp_path / f"{tenant}-{reply}", reply)
    bundle = bundle_from_folders(tenant, bot, model)
    return AvroCodec("bot_version").encode(bundle.to_record()), bundle.version


def test_the_last_record_of_a_tenant_in_a_batch_wins(worker: Worker, tmp_path: Path) -> None:
    old, _ = version_value(tmp_path, "acme", "old")
    new, new_version = version_value(tmp_path, "acme", "new")
    worker.feed((b"acme", old), (b"acme", new))
    current = worker.registry.get("acme")
    assert current is not None and current.version == new_version
    assert worker.follower.installed == 1  # the older record of the batch was never loaded
    assert [p.name for p in (tmp_path / "served").iterdir()] == [new_version]


def test_bad_records_are_skipped_and_the_tenant_keeps_its_version(worker: Worker,
                                                                  tmp_path: Path) -> None:
    good, good_version = version_value(tmp_path, "acme", "good")
    worker.feed((b"acme", good))
    broken, _ = version_value(tmp_path, "acme", "broken")
    other_tenant, _ = version_value(tmp_path, "globex", "hi")
    codec = AvroCodec("bot_version")
    tampered = codec.decode(good)
    tampered["files"][0]["data"] += b"!"
    worker.feed((b"acme", b"not avro"))
    worker.feed((b"acme", other_tenant))  # keyed by one tenant, holding another's bot
    worker.feed((b"acme", codec.encode(tampered)))
    worker.feed((b"acme", broken))  # the loader refuses it
    follower = worker.follower
    assert (follower.undecodable, follower.rejected, follower.failed) == (1, 2, 1)
    current = worker.registry.get("acme")
    assert current is not None and current.version == good_version
    assert worker.registry.get("globex") is None


def test_a_tombstone_unpublishes(worker: Worker, tmp_path: Path) -> None:
    value, _ = version_value(tmp_path, "acme", "hello")
    worker.feed((b"acme", value))
    worker.feed((b"acme", None), (b"nobody", None))
    assert worker.registry.get("acme") is None and worker.follower.removed == 1


def test_the_consumer_fetches_a_whole_version() -> None:
    limits = consumer_limits(64 << 20)
    assert limits["fetch.max.bytes"] > 64 << 20
    assert limits["max.partition.fetch.bytes"] == limits["fetch.max.bytes"]
    # librdkafka refuses receive.message.max.bytes below fetch.max.bytes + 512
    assert limits["receive.message.max.bytes"] >= limits["fetch.max.bytes"] + 512


def canary_value(tmp_path: Path, tenant: str, reply: str, percent: int) -> tuple[bytes, str]:
    bot, model = make_bot(tmp_path / f"{tenant}-{reply}-canary", reply)
    bundle = replace(bundle_from_folders(tenant, bot, model), canary_percent=percent)
    return AvroCodec("bot_version").encode(bundle.to_record()), bundle.version


def test_a_canary_key_installs_a_canary_beside_the_stable_version(
        worker: Worker, tmp_path: Path) -> None:
    stable, stable_version = version_value(tmp_path, "acme", "stable")
    canary, canary_version = canary_value(tmp_path, "acme", "canary", 20)
    worker.feed((b"acme", stable), (b"acme#canary", canary))
    current, beside = worker.registry.get("acme"), worker.registry.canary("acme")
    assert current is not None and current.version == stable_version
    assert beside is not None and (beside.bot.version, beside.percent) == (canary_version, 20)
    worker.feed((b"acme#canary", None))  # rollback: the stable version stays
    assert worker.registry.canary("acme") is None
    assert worker.registry.get("acme") is current and worker.follower.removed == 1


def test_a_record_under_the_other_track_s_key_is_rejected(
        worker: Worker, tmp_path: Path) -> None:
    stable, _ = version_value(tmp_path, "acme", "stable")
    canary, _ = canary_value(tmp_path, "acme", "canary", 20)
    # A canary under the stable key would reach every user; a stable one under the canary
    # key would reach a percentage it never asked for: both are refused.
    worker.feed((b"acme", canary), (b"acme#canary", stable))
    assert worker.registry.get("acme") is None and worker.registry.canary("acme") is None
    assert worker.follower.rejected == 2


def test_unpublishing_drops_the_canary_too(worker: Worker, tmp_path: Path) -> None:
    stable, _ = version_value(tmp_path, "acme", "stable")
    canary, _ = canary_value(tmp_path, "acme", "canary", 20)
    worker.feed((b"acme", stable), (b"acme#canary", canary))
    worker.feed((b"acme#canary", None), (b"acme", None))  # what `parley bot unpublish` sends
    assert worker.registry.get("acme") is None and worker.registry.canary("acme") is None
    assert worker.registry.tenants() == []
