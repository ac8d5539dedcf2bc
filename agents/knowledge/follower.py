"""Following ``kb.documents``: every knowledge worker builds the same index.

:class:`KbDocumentsFollower` reads the compacted topic from the beginning
(:class:`streams.follow.TopicFollower`: every partition, no consumer group, no
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
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from agents.knowledge.documents import Document
from agents.knowledge.errors import KnowledgeError
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.publisher import parse_record_key
from kernel.errors import DecodeError
from streams.codecs import codec_for
from streams.follow import TableFollower
from streams.keys import InvalidIdError, validate_id

__all__ = ["KbDocumentsFollower"]

logger = logging.getLogger(__name__)


class KbDocumentsFollower(TableFollower):
    start_error = KnowledgeError

    def __init__(self, kb: KnowledgeBase, *, bootstrap: str, topic: str,
                 registry_url: str = "", on_change: Callable[[set[str]], None] | None = None,
                 poll_timeout_s: float = 0.2, batch_size: int = 256,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(bootstrap, topic, log_as="kb.follower", batch_size=batch_size,
                         poll_timeout_s=poll_timeout_s, config=config)
        self.kb = kb
        self.on_change = on_change
        self._codec = codec_for("kb_document", registry_url, topic)
        self.applied = self.deleted = self.unchanged = self.undecodable = self.rejected = 0

    # --- a batch, on the follower's thread ------------------------------------------
    def apply_latest(self, latest: dict[bytes, Message]) -> None:
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
