"""Publishing documents to the compacted ``kb.documents`` topic.

Key ``tenant_id:doc_id``; value an Avro ``KbDocument`` (schemas/kb_document.avsc),
or null — a tombstone — to delete. Compaction keeps the latest record per key,
so a worker that reads the topic from the beginning rebuilds exactly the
current knowledge base. The producer is idempotent with ``acks=all``; a
record the broker did not take is reported by :meth:`KbPublisher.flush`, never
dropped silently.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agents.knowledge.documents import Document
from agents.knowledge.errors import KnowledgeError
from streams.codecs import codec_for
from streams.security import bootstrap_config

__all__ = ["KbPublisher", "document_record", "parse_record_key", "record_key"]

logger = logging.getLogger(__name__)


def record_key(tenant: str, doc_id: str) -> bytes:
    """The ``kb.documents`` record key of a document: ``tenant:doc_id``."""
    return f"{tenant}:{doc_id}".encode()


def parse_record_key(key: bytes) -> tuple[str, str] | None:
    """``(tenant, doc_id)`` from a record key; None when it is not one."""
    tenant, sep, doc_id = key.decode("utf-8", "replace").partition(":")
    return (tenant, doc_id) if sep else None


def document_record(doc: Document, *, updated_at_ms: int | None = None) -> dict[str, Any]:
    return {
        "tenant_id": doc.tenant,
        "doc_id": doc.id,
        "title": doc.title,
        "text": doc.text,
        "metadata": dict(doc.metadata),
        "content_hash": doc.content_hash,
        "source": doc.source,
        "updated_at": updated_at_ms if updated_at_ms is not None else int(time.time() * 1000),
    }


class KbPublisher:
    def __init__(self, bootstrap: str, topic: str, *, registry_url: str = "",
                 config: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self._codec = codec_for("kb_document", registry_url, topic)
        self._producer = Producer({
            **bootstrap_config(bootstrap),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
            **(config or {}),
        })
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            key = (msg.key() or b"").decode(errors="replace")
            self._failures.append(f"{key}: {err.str()}")

    def _produce(self, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain, retry
            except KafkaException as exc:
                raise KnowledgeError(f"cannot publish {key.decode()} to {self.topic}: {exc}") \
                    from exc
        self._producer.poll(0)

    def publish(self, doc: Document) -> None:
        self._produce(record_key(doc.tenant, doc.id), self._codec.encode(document_record(doc)))

    def delete(self, tenant: str, doc_id: str) -> None:
        """Publish a tombstone: every follower drops the document."""
        self._produce(record_key(tenant, doc_id), None)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every record; raise if any was not delivered."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            self._failures.append(f"{remaining} records still queued after {timeout_s}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise KnowledgeError(f"{len(failures)} kb.documents records not delivered: "
                                 + "; ".join(failures[:5]))
