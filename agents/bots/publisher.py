"""Publishing bot versions to the compacted ``bots`` topic.

Key: the tenant id (its stable version) or ``<tenant>#canary`` (its canary,
agents/bots/canary.py); value: a ``BotVersion`` Avro record
(schemas/bot_version.avsc) holding the whole version, or null — a tombstone — to
unpublish (or withdraw the canary). Compaction keeps the latest record per key,
so a worker that reads the topic from the beginning serves exactly every
tenant's current versions.

One record per version, not chunks: a version is then atomic (a worker sees
it whole or not at all) and compaction alone retires the old one. Chunks would
need a key per chunk, a head record naming them, tombstones for the old
chunks, and reassembly in every worker, to move records that fit in one: the
demo bot with its model is ~19 MB (intent.onnx: 17 MB), and the topic takes
records of up to ``max_message_bytes`` (64 MiB, streams/topics.toml). The
producer's limit is raised to the same number; a version larger than that is
refused here with both sizes, never cut.

The producer is idempotent with ``acks=all``; :meth:`BotPublisher.flush` raises
when the broker did not take a record. Who may publish: whoever may produce to
``bots`` (operators, CI): the record is what every worker runs.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agents.bots.bundle import BotBundle
from agents.bots.canary import record_key
from agents.bots.errors import BotPublishError
from streams.codecs import AvroCodec, codec_for
from streams.security import bootstrap_config
from streams.topics import bots_max_message_bytes, producer_compression

__all__ = ["BotPublisher", "encode_version"]

logger = logging.getLogger(__name__)

#: Room left in a request for the record batch's framing, key and headers.
_FRAMING_BYTES = 64 * 1024


def encode_version(bundle: BotBundle, codec: AvroCodec, max_message_bytes: int,
                   topic: str) -> bytes:
    """The record value of ``bundle``; :class:`BotPublishError` when ``topic`` (taking
    records of up to ``max_message_bytes``) cannot take it."""
    value = codec.encode(bundle.to_record())
    limit = max_message_bytes - _FRAMING_BYTES
    if len(value) > limit:
        raise BotPublishError(
            f"bot version {bundle.version[:12]} of tenant {bundle.tenant_id} is "
            f"{len(value):,} bytes; the {topic} topic takes records of up to "
            f"{limit:,} bytes (max_message_bytes in streams/topics.toml)")
    return value


class BotPublisher:
    def __init__(self, bootstrap: str, topic: str, *, registry_url: str = "",
                 max_message_bytes: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self.max_message_bytes = max_message_bytes or bots_max_message_bytes()
        self._codec = codec_for("bot_version", registry_url, topic)
        self._producer = Producer({
            **bootstrap_config(bootstrap),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": producer_compression(),
            "message.max.bytes": self.max_message_bytes,
            "message.timeout.ms": 60_000,
            **(config or {}),
        })
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            key = (msg.key() or b"").decode(errors="replace")
            self._failures.append(f"tenant {key}: {err.str()}")

    def publish(self, bundle: BotBundle) -> int:
        """Send ``bundle`` as the tenant's stable version, or as its canary when its
        ``canary_percent`` is set; returns the record's size. Call :meth:`flush` to know
        that the broker has it."""
        value = encode_version(bundle, self._codec, self.max_message_bytes, self.topic)
        self._produce(bundle.tenant_id, value, canary=bundle.canary_percent > 0)
        return len(value)

    def withdraw_canary(self, tenant_id: str) -> None:
        """Send a tombstone on the tenant's canary key: its users go back to the stable
        version for new tasks."""
        self._produce(tenant_id, None, canary=True)

    def unpublish(self, tenant_id: str) -> None:
        """Send tombstones: every worker drops the tenant's bot, canary included."""
        self._produce(tenant_id, None, canary=True)
        self._produce(tenant_id, None, canary=False)

    def _produce(self, tenant_id: str, value: bytes | None, *, canary: bool) -> None:
        key = record_key(tenant_id, canary=canary)
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain, retry
            except KafkaException as exc:
                raise BotPublishError(f"cannot publish tenant {tenant_id}'s bot to "
                                      f"{self.topic}: {exc}") from exc
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every record; raise :class:`BotPublishError` if any was not delivered."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            self._failures.append(f"{remaining} records still queued after {timeout_s}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise BotPublishError(f"{self.topic}: not delivered: " + "; ".join(failures[:5]))
