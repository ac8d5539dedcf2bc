"""What is published on ``bots`` now, read as a worker would (for ``parley bot``).

:func:`read_published` reads the compacted topic from its beginning to its end
and keeps the last record of each key (a tenant's stable version, and its canary:
agents/bots/canary.py), as a worker's follower does, but keeps only what a person
needs (version, name, when, by whom, size, canary percentage), and the whole
checked versions of at most one tenant (``parley bot publish`` compares the
tenant's previous documents with the new ones; ``promote`` republishes its canary).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from confluent_kafka import Message

from agents.bots.bundle import BotBundle, check_record, millis
from agents.bots.canary import tenant_of_key
from agents.bots.errors import BotPublishError
from agents.bots.follower import consumer_limits
from kernel.errors import DecodeError
from streams.codecs import codec_for
from streams.errors import FollowerError
from streams.follow import TopicFollower
from streams.topics import bots_max_message_bytes

__all__ = ["Published", "PublishedVersion", "read_published"]


@dataclass(frozen=True)
class PublishedVersion:
    """A tenant's stable or canary version, as ``parley bot list`` shows it."""

    tenant_id: str
    version: str
    name: str
    published_at_ms: int
    published_by: str
    files: int
    size: int
    canary_percent: int = 0


@dataclass(frozen=True)
class Published:
    """What ``bots`` holds: each tenant's stable version, each canary, and the checked
    stable and canary bundles of the tenant asked for (None: none, or not checked)."""

    stable: dict[str, PublishedVersion]
    canaries: dict[str, PublishedVersion]
    kept_stable: BotBundle | None = None
    kept_canary: BotBundle | None = None


def read_published(bootstrap: str, topic: str, *, registry_url: str = "",
                   timeout_s: float = 30.0, keep_files_of: str | None = None) -> Published:
    """Every tenant's stable and canary versions on ``topic``, and the checked bundles
    of tenant ``keep_files_of``.

    Raises :class:`BotPublishError` when the topic does not exist or is not read
    within ``timeout_s``.
    """
    codec = codec_for("bot_version", registry_url, topic)
    current: dict[tuple[str, bool], PublishedVersion | None] = {}
    kept: dict[bool, BotBundle | None] = {}
    lock = threading.Lock()

    def take(records: list[Message]) -> None:
        for msg in records:
            tenant, canary = tenant_of_key(msg.key() or b"")
            value = msg.value()
            try:
                record = codec.decode(value) if value is not None else None
            except DecodeError:
                continue  # workers skip it too: the version before stays current
            with lock:
                if record is None:
                    current[tenant, canary] = None
                else:
                    current[tenant, canary] = PublishedVersion(
                        tenant, record["bot_version"], record["bot_name"],
                        millis(record["published_at"]), record.get("published_by", ""),
                        len(record["files"]), sum(len(f["data"]) for f in record["files"]),
                        record.get("canary_percent", 0))
                if tenant == keep_files_of:
                    kept[canary] = _checked(record)

    follower = TopicFollower(bootstrap, topic, take, from_beginning=True, batch_size=16,
                             log_as="bots.catalog",
                             config=consumer_limits(bots_max_message_bytes()))
    try:
        follower.assign()
    except FollowerError as exc:
        follower.stop()
        raise BotPublishError(str(exc)) from exc
    follower.start()
    try:
        caught_up = follower.caught_up.wait(timeout_s)
    finally:
        follower.stop()
    if follower.error is not None:
        raise BotPublishError(f"cannot read {topic}: {follower.error}")
    if not caught_up:
        raise BotPublishError(f"{topic} was not read within {timeout_s:g} s")
    return Published(
        {tenant: v for (tenant, canary), v in current.items() if v is not None and not canary},
        {tenant: v for (tenant, canary), v in current.items() if v is not None and canary},
        kept.get(False), kept.get(True))


def _checked(record: dict[str, object] | None) -> BotBundle | None:
    if record is None:
        return None
    try:
        return check_record(record)
    except BotPublishError:
        return None
