"""The Tansu broker: a Kafka-wire-compatible broker that keeps data in memory only.

Started as ``tansu broker --storage-engine memory://tansu/ ...``: every topic and
message is lost when the process stops. That is the point for development and
tests; durability comes from a real Kafka cluster in production.

Tansu's runtime (tokio) starts a worker thread per core unless
``TOKIO_WORKER_THREADS`` says otherwise, and the embedded broker keeps that
default. On two cores, one thread (the rule before 2026-12-01) cost it 5-19 %
less CPU per message in ``parley bench broker`` at 2,000 msg/s, but the whole
pipeline answered no more at 2,000 offered, and at 100 msg/s among 10,000
sessions its median round trip was 2.5-3.5 ms longer in five alternating pairs
(docs/benchmarks.md); the likely reason is that on one thread a fetch's answer
waits behind any other client's request. A ``TOKIO_WORKER_THREADS`` already in
the environment wins.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.ports import port_accepts
from infra.process import ServiceProcess
from infra.waiting import Deadline, wait_until

__all__ = [
    "MEMORY_STORAGE",
    "admin_client",
    "broker_process",
    "broker_threads",
    "kafka_metadata_ok",
    "wait_broker",
]

logger = logging.getLogger(__name__)

#: Tansu's in-memory storage engine, chosen explicitly (it is also the default).
MEMORY_STORAGE = "memory://tansu/"


def broker_threads() -> int:
    """Tokio worker threads for the embedded broker: ``TOKIO_WORKER_THREADS``, else
    one per core (tokio's own default, written out so that logs and benchmarks say it)."""
    return int(os.environ.get("TOKIO_WORKER_THREADS") or os.cpu_count() or 1)


def broker_process(binary: str, host: str, port: int, log_path: Path) -> ServiceProcess:
    url = f"tcp://{host}:{port}"
    argv = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        MEMORY_STORAGE,
    ]
    return ServiceProcess("tansu", argv, log_path, port,
                          {"TOKIO_WORKER_THREADS": str(broker_threads())})


def admin_client(bootstrap: str) -> AdminClient:
    """An AdminClient whose librdkafka log lines go to Python logging, not stderr."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": logging.getLogger("infra.librdkafka"),
        # Retry a refused connection quickly instead of backing off for seconds.
        "reconnect.backoff.max.ms": 500,
    }
    return AdminClient(config)


def kafka_metadata_ok(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if a Kafka metadata request to ``bootstrap`` succeeds within ``timeout``."""
    try:
        metadata = admin_client(bootstrap).list_topics(timeout=timeout)
    except KafkaException as exc:
        logger.debug("metadata request to %s failed: %s", bootstrap, exc)
        return False
    return bool(metadata.brokers)


def wait_broker(process: ServiceProcess, host: str, deadline: Deadline) -> None:
    """Block until the broker accepts connections and answers a metadata request."""
    wait_until(
        lambda: port_accepts(host, process.port),
        deadline,
        f"{process.name} to listen on {host}:{process.port}",
        check=process.check_running,
    )
    bootstrap = f"{host}:{process.port}"
    wait_until(
        lambda: kafka_metadata_ok(bootstrap, timeout=max(0.1, min(2.0, deadline.remaining()))),
        deadline,
        f"a Kafka metadata response from {bootstrap}",
        check=process.check_running,
    )
