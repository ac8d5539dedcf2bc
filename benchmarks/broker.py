"""What one hop costs the broker: ``parley bench broker``.

Starts its own Apache Kafka node (nothing else shares its CPU), then for each
partition count creates a topic and measures the broker's CPU

* while one consumer long-polls every partition with the workers' fetch wait
  and nothing is produced (what an idle stack pays per consuming client), and
* while an idempotent producer (``acks=all``, ``--linger-ms``) sends
  ``--rate`` messages a second keyed over 400 conversations and that consumer
  reads them back: one hop of the pipeline.

With ``stored`` batches already in each partition (one record each, what a
stream at a few messages a second leaves behind), the same hop shows whether a
long-running broker pays more the more it holds. Kafka finds a fetch's offset
through a segment index, so it should not; Tansu 0.6, the embedded broker
before Kafka, listed every stored batch on each fetch (docs/infra.md).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from benchmarks.deploy import _children_env
from infra.broker import HEAP, admin_client, format_storage, kafka_nodes, node_process, wait_brokers
from infra.kafka_dist import KAFKA_VERSION, resolve_kafka
from infra.ports import find_free_ports
from infra.waiting import Deadline
from kernel.credentials import Credentials
from streams.security import bootstrap_config

__all__ = ["run_broker_bench"]

_HOST = "127.0.0.1"
_KEYS = 400
_VALUE = b"x" * 300  # about a ChatMessage


@contextlib.contextmanager
def _own_broker() -> Iterator[tuple[str, psutil.Process]]:
    """The bootstrap address and the process of a new one-node Kafka cluster."""
    with tempfile.TemporaryDirectory(prefix="parley-bench-broker-") as tmp:
        dist = resolve_kafka()
        port, controller = find_free_ports(2, _HOST)
        (node,) = kafka_nodes(Path(tmp), _HOST, [port], [controller])
        deadline = Deadline(60)
        credentials = Credentials.generate()
        format_storage(dist, [node], deadline, credentials)
        broker = node_process(dist, node, Path(tmp) / "kafka.log")
        broker.start()
        try:
            # This process's clients authenticate as the broker's client user.
            with _children_env(**credentials.client_env()):
                wait_brokers([broker], _HOST, deadline)
                assert broker.process is not None
                yield f"{_HOST}:{port}", broker.process
        finally:
            broker.stop()


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _fill(bootstrap: str, topic: str, partitions: int, batches: int) -> None:
    """Store ``batches`` batches of one record in each partition of ``topic``."""
    producer = Producer({**bootstrap_config(bootstrap), "linger.ms": 0,
                         "batch.num.messages": 1, "queue.buffering.max.messages": 1_000_000})
    for i in range(batches * partitions):
        while True:
            try:
                producer.produce(topic, partition=i % partitions, value=_VALUE)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        if i % 1000 == 999:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"could not store {batches} batches in each partition of {topic}")


class _Reader:
    """A consumer thread reading every partition of a topic from ``start``, like a
    worker's fetcher."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, fetch_wait_ms: int,
                 start: int = 0) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._consumer = Consumer({
            **bootstrap_config(bootstrap), "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait_ms,
        })  # fmt: skip
        self._consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += sum(1 for m in self._consumer.consume(500, 0.1) if m.error() is None)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _measure_hop(bootstrap: str, broker: psutil.Process, partitions: int, rate: float,
                 seconds: float, fetch_wait_ms: int, linger_ms: float,
                 stored: int = 0) -> dict[str, Any]:
    topic = f"bench-broker-{uuid.uuid4().hex[:8]}"
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    _fill(bootstrap, topic, partitions, stored)
    reader = _Reader(bootstrap, topic, partitions, fetch_wait_ms, start=stored)
    try:
        time.sleep(1.0)  # assignment and first fetches
        start_cpu, start = _cpu_s(broker), time.monotonic()
        time.sleep(seconds)
        idle_util = (_cpu_s(broker) - start_cpu) / (time.monotonic() - start)

        producer = Producer({**bootstrap_config(bootstrap), "enable.idempotence": True,
                             "acks": "all", "linger.ms": linger_ms})
        sent = 0
        start_cpu, start = _cpu_s(broker), time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            for _ in range(int(elapsed * rate) - sent):
                producer.produce(topic, key=str(sent % _KEYS).encode(), value=_VALUE)
                sent += 1
            producer.poll(0.001)
        producer.flush(30)
        deadline = time.monotonic() + 30
        while reader.count < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        busy_s = time.monotonic() - start
        used = _cpu_s(broker) - start_cpu
    finally:
        reader.stop()
        admin.delete_topics([topic])
    return {
        "partitions": partitions,
        "stored_batches_per_partition": stored,
        "idle_cpu_util": round(idle_util, 3),
        "sent": sent,
        "consumed": reader.count,
        "cpu_util": round(used / busy_s, 3),
        "cpu_us_per_msg": round(used / max(sent, 1) * 1e6, 1),
    }


def run_broker_bench(partitions: Sequence[int], rate: float, seconds: float,
                     fetch_wait_ms: int, linger_ms: float,
                     stored: Sequence[int] = (0,)) -> dict[str, Any]:
    """One produce-and-consume hop per partition count and stored batch count, each on
    a topic of its own, on a broker of its own."""
    with _own_broker() as (bootstrap, broker):
        runs = [_measure_hop(bootstrap, broker, n, rate, seconds, fetch_wait_ms, linger_ms, k)
                for n in partitions for k in stored]
    return {"rate": rate, "seconds": seconds, "fetch_wait_ms": fetch_wait_ms,
            "linger_ms": linger_ms, "cores": psutil.cpu_count(),
            "broker": f"Apache Kafka {KAFKA_VERSION}, heap {HEAP}",
            "runs": runs}

