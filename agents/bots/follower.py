"""Following ``bots``: every worker serves every tenant's current bot version.

:class:`BotsFollower` reads the compacted topic from the beginning
(:class:`streams.follow.TopicFollower`: every partition, no consumer group, no
commits: every worker must see every record), in a background thread. For the
last record of each key in a batch (compaction semantics: a tenant's stable
version and its canary have a key each, agents/bots/canary.py) it:

1. decodes the ``BotVersion`` and checks it whole (:func:`agents.bots.bundle.check_record`);
2. unpacks it into ``<root>/<version>/`` (content-addressed, written aside and
   renamed into place);
3. installs it in the :class:`~agents.bots.registry.BotRegistry` as the tenant's
   stable version or its canary, which loads it with the worker's loader and only
   then swaps the tenant's bot.

A tombstone (null value) unpublishes the tenant's bot, or on a canary's key
withdraws the canary. A record that does not
decode, does not check, or whose version the loader cannot load, is logged with
its partition and offset, counted, and skipped: the tenant keeps the version it
had, and the follower keeps going. Any other error stops it: it is logged, kept
in :attr:`BotsFollower.error`, and should turn the worker's ``/readyz`` to 503.

The follower keeps the root to what the registry holds
(:class:`~agents.bots.disk.ServedBotsDisk`): after each batch, the folders of the
versions the registry dropped (and of a version the loader refused) are removed,
and the first time :meth:`BotsFollower.wait_caught_up` says the follower caught up,
every folder of an earlier run the registry does not hold is removed too.

A version is one record of up to ``bots_max_message_bytes()`` (64 MiB), so the
consumer's fetch limits are raised to that (:func:`consumer_limits`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Generic, TypeVar

from confluent_kafka import Message

from agents.bots.bundle import check_record
from agents.bots.canary import tenant_of_key
from agents.bots.disk import ServedBotsDisk
from agents.bots.errors import BotPublishError
from agents.bots.registry import BotRegistry
from kernel.errors import DecodeError
from streams.codecs import codec_for
from streams.follow import TableFollower
from streams.topics import bots_max_message_bytes

__all__ = ["BotsFollower", "consumer_limits"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def consumer_limits(max_message_bytes: int) -> dict[str, Any]:
    """librdkafka consumer settings that fetch a record of ``max_message_bytes``.

    Kafka hands a consumer the first record batch of a partition whole even when it
    exceeds the fetch limits, but librdkafka drops a response larger than
    ``receive.message.max.bytes``; the fetch limits are raised with it so one fetch
    takes a whole version.
    """
    fetch = max_message_bytes + 1024 * 1024  # the record plus its batch's framing
    return {
        "fetch.max.bytes": fetch,
        "max.partition.fetch.bytes": fetch,
        "receive.message.max.bytes": fetch + 1024 * 1024,
    }


class BotsFollower(TableFollower, Generic[T]):
    start_error = BotPublishError

    def __init__(self, registry: BotRegistry[T], root: Path, *, bootstrap: str, topic: str,
                 registry_url: str = "", poll_timeout_s: float = 0.2,
                 max_message_bytes: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        limits = consumer_limits(max_message_bytes or bots_max_message_bytes())
        super().__init__(bootstrap, topic, log_as="bots.follower", batch_size=16,
                         poll_timeout_s=poll_timeout_s, config={**limits, **(config or {})})
        self.registry = registry
        self.root = Path(root)
        self.disk = ServedBotsDisk(registry, self.root)
        self._swept = False
        self._codec = codec_for("bot_version", registry_url, topic)
        self.installed = self.removed = self.undecodable = self.rejected = self.failed = 0

    # --- a batch, on the follower's thread ---------------------------------------
    def apply_latest(self, latest: dict[bytes, Message]) -> None:
        with self.disk.batch():  # then the versions the registry dropped are removed
            for key, msg in latest.items():
                self._apply_one(key, msg)

    def wait_caught_up(self, timeout_s: float | None = None) -> bool:
        """True once every record present at start has been applied; the first time,
        the folders of the versions the registry does not hold (an earlier run's) are
        removed before it returns."""
        caught_up = super().wait_caught_up(timeout_s)
        if caught_up and not self._swept:
            self._swept = True
            self.disk.sweep()
        return caught_up

    def _apply_one(self, key: bytes, msg: Message) -> None:
        where = f"partition={msg.partition()} offset={msg.offset()}"
        value = msg.value()
        tenant, canary = tenant_of_key(key)
        if value is None:
            if self.registry.withdraw_canary(tenant) if canary else self.registry.remove(tenant):
                self.removed += 1
            return
        try:
            record = self._codec.decode(value)
        except DecodeError as exc:
            self.undecodable += 1
            logger.warning("bots.follower.undecodable %s error=%s", where, exc)
            return
        if record["tenant_id"] != tenant or canary != (record.get("canary_percent", 0) > 0):
            self.rejected += 1
            logger.warning("bots.follower.rejected %s error=key %r is not tenant %r's %s "
                           "key", where, key, record["tenant_id"],
                           "canary" if record.get("canary_percent", 0) > 0 else "stable")
            return
        try:
            bundle = check_record(record)
            unpacked = self.disk.unpack(bundle)
        except BotPublishError as exc:
            self.rejected += 1
            logger.warning("bots.follower.rejected %s error=%s", where, exc)
            return
        except OSError as exc:  # the disk: this version cannot be used here
            self.failed += 1
            logger.error("bots.follower.unpack_failed %s tenant=%s error=%s", where,
                         bundle.tenant_id, exc)
            return
        try:
            if canary:
                self.registry.install_canary(bundle.tenant_id, unpacked, bundle.canary_percent,
                                             published_at_ms=bundle.published_at_ms)
            else:
                self.registry.install(bundle.tenant_id, unpacked,
                                      published_at_ms=bundle.published_at_ms)
        except Exception:  # the loader's: the tenant keeps the version it had
            self.failed += 1
            logger.exception("bots.follower.load_failed %s tenant=%s version=%s", where,
                             bundle.tenant_id, bundle.version[:12])
            return
        self.installed += 1
