"""Following ``kb.documents``: every knowledge worker builds the same index.

:class:`KbDocumentsFollower` reads the compacted topic from the beginning with
a confluent-kafka consumer (manual ``assign()``, no consumer group, no
commits: every worker must see every record), in a background thread, and
applies each batch to the in-memory knowledge base: the last record per key
wins (compaction semantics), a tombstone deletes, an unchanged document
(same content hash) is skipped, changed ones are re-embedded in one batch.
After a batch it calls ``on_change`` with the tenants whose documents changed
(the service retires their cached answers).

An undecodable record, or one with an invalid tenant id, is logged with its
partition and offset, counted and skipped; the follower keeps going. Any other
error stops it: it is logged, kept in :attr:`KbDocumentsFollower.error`, and
turns the worker's ``/readyz`` to 503.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from agents.knowledge.documents import Document
from agents.knowledge.errors import KnowledgeError
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.publisher import parse_record_key
from kernel.errors import DecodeError
from streams.codecs import codec_for
from streams.keys import InvalidIdError, validate_id

__all__ = ["KbDocumentsFollower"]

logger = logging.getLogger(__name__)


class KbDocumentsFollower:
    def __init__(self, kb: KnowledgeBase, *, bootstrap: str, topic: str,
                 registry_url: str = "", on_change: Callable[[set[str]], None] | None = None,
                 poll_timeout_s: float = 0.2, batch_size: int = 256,
                 config: dict[str, Any] | None = None) -> None:
        self.kb = kb
        self.topic = topic
        self.on_change = on_change
        self.poll_timeout_s = poll_timeout_s
        self.batch_size = batch_size
        self._codec = codec_for("kb_document", registry_url, topic)
        self._config = {
            "bootstrap.servers": bootstrap,
            # Required by librdkafka even with assign(); nothing is ever committed.
            "group.id": f"parley-kb-follower-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            **(config or {}),
        }
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pending_eof: set[int] = set()
        self.applied = self.deleted = self.unchanged = self.undecodable = self.rejected = 0

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("follower already started")
        consumer = Consumer(self._config)
        try:
            metadata = consumer.list_topics(self.topic, timeout=10)
            topic_meta = metadata.topics.get(self.topic)
            if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
                raise KnowledgeError(
                    f"topic {self.topic} does not exist or has no partitions "
                    "(create it with `parley infra up`)")
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                             for p in sorted(topic_meta.partitions)])
        except BaseException:
            consumer.close()
            raise
        self._pending_eof = set(topic_meta.partitions)
        self._thread = threading.Thread(target=self._run, args=(consumer,),
                                        name=f"kb-follower:{self.topic}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop and close the consumer (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait_caught_up(self, timeout_s: float | None = None) -> bool:
        """True once every record present at start has been applied."""
        return self._caught_up.wait(timeout_s)

    @property
    def error(self) -> BaseException | None:
        return self._error

    # --- the loop ----------------------------------------------------------------
    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.batch_size, self.poll_timeout_s)
                records: list[Message] = []
                for msg in messages:
                    err = msg.error()
                    if err is None:
                        records.append(msg)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        self._pending_eof.discard(msg.partition())
                    elif err.fatal():
                        raise KnowledgeError(f"kb.documents consumer failed: {err.str()}")
                    else:
                        logger.warning("kb.follower.consumer_error error=%s", err.str())
                if records:
                    self._apply(records)
                if not self._pending_eof and not self._caught_up.is_set():
                    logger.info("kb.follower.caught_up applied=%d deleted=%d", self.applied,
                                self.deleted)
                    self._caught_up.set()
        except BaseException as exc:  # surfaced through .error; the thread must not die silently
            self._error = exc
            logger.exception("kb.follower.stopped_on_error")
        finally:
            consumer.close()

    def _apply(self, records: list[Message]) -> None:
        latest: dict[bytes, Message] = {}
        for msg in records:  # compaction semantics: the last record per key wins
            latest[msg.key() or b""] = msg
        upserts: list[Document] = []
        deletes: list[tuple[str, str]] = []
        undecodable = rejected = 0
        for key, msg in latest.items():
            value = msg.value()
            if value is None:
                parsed = parse_record_key(key)
                if parsed is not None:
                    deletes.append(parsed)
                else:
                    logger.warning("kb.follower.bad_key key=%r offset=%s", key, msg.offset())
                continue
            try:
                record = self._codec.decode(value)
            except DecodeError as exc:
                undecodable += 1
                logger.warning("kb.follower.undecodable partition=%s offset=%s error=%s",
                               msg.partition(), msg.offset(), exc)
                continue
            try:  # checked here: upsert_many would reject the whole batch for it
                validate_id("tenant id", record["tenant_id"])
            except InvalidIdError as exc:
                rejected += 1
                logger.warning("kb.follower.rejected partition=%s offset=%s error=%s",
                               msg.partition(), msg.offset(), exc)
                continue
            upserts.append(Document(
                id=record["doc_id"], title=record["title"], text=record["text"],
                tenant=record["tenant_id"], metadata=dict(record.get("metadata") or {}),
                source=record.get("source", ""),
            ))
        changed: set[str] = set()
        for tenant, doc_id in deletes:
            if self.kb.delete(tenant, doc_id):
                self.deleted += 1
                changed.add(tenant)
        result = self.kb.upsert_many(upserts)
        # Counters move only once the batch is visible in the knowledge base, so a reader that
        # sees them has also seen every change of the batch.
        self.applied += result.upserted
        self.unchanged += result.unchanged
        self.undecodable += undecodable
        self.rejected += rejected
        changed |= result.tenants
        if changed:
            logger.info("kb.follower.applied upserted=%d deleted=%d tenants=%s",
                        result.upserted, len(deletes), sorted(changed))
            if self.on_change is not None:
                self.on_change(changed)
