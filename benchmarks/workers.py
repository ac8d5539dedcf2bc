"""``parley bench worker``: the stream workers alone, fed a backlog.

No gateway and no WebSocket client: ``messages`` ChatMessage events (the bench
conversations' texts, spread over ``conversations`` conversations, each
conversation's messages in order) are produced to ``chat.inbound`` in one go, and
the run lasts until every one of them has its reply on ``chat.outbound``. The
workers see large batches throughout, so this is their capacity — the most the
gateways can hand them — and their CPU per message, with the broker's over the
same window. On a machine whose speed drifts, it is also the steadiest way to
compare two versions of the worker: run them alternately.

Replies are counted by ``in_reply_to``: a reply seen twice is ``duplicated``, a
message with none after ``drain_timeout`` is ``missing``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition

from benchmarks.deploy import InfraMode, pipeline_deployment
from benchmarks.e2e import cpu_per_message
from benchmarks.procstats import ProcessSampler
from benchmarks.script import ConversationScript, load_script
from streams.codecs import codec_for
from streams.security import bootstrap_config
from streams.topics import CHAT_INBOUND, CHAT_OUTBOUND

__all__ = ["WorkerBenchOptions", "run_worker_bench"]


@dataclass(frozen=True)
class WorkerBenchOptions:
    messages: int = 20_000
    conversations: int = 400
    workers: int = 1
    partitions: int | None = None  # default: PARLEY_CHAT_PARTITIONS
    drain_timeout: float = 120.0
    model_dir: Path | None = None
    infra: InfraMode = "own"  # or "running": PARLEY_KAFKA_BOOTSTRAP / PARLEY_REDIS_NODES
    data_parent: Path | None = None
    keep_data: bool = False  # keep the run's data dir (each process's log is in logs/)

    def __post_init__(self) -> None:
        if self.messages < 1 or self.conversations < 1 or self.workers < 1:
            raise ValueError("--messages, --conversations and --workers must be at least 1")
        if self.drain_timeout <= 0:
            raise ValueError("--drain-timeout must be positive")


def _backlog(options: WorkerBenchOptions, script: ConversationScript,
             run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``(conversation id, ChatMessage)`` for every message, in the order produced."""
    now_ms = int(time.time() * 1000)
    events = []
    for i in range(options.messages):
        c, j = i % options.conversations, i // options.conversations
        conversation = f"{run_id}-c{c}"
        event_id = uuid.uuid4().hex
        events.append((conversation, {
            "event_id": event_id, "tenant_id": "demo", "conversation_id": conversation,
            "user_id": f"u-{conversation}", "channel": "bench", "seq": j + 1,
            "timestamp": now_ms, "trace_id": event_id, "reply_route": "bench",
            "payload": {"text": script.text(c, j), "client_msg_id": str(i), "locale": None},
        }))  # fmt: skip
    return events


def run_worker_bench(options: WorkerBenchOptions) -> dict[str, Any]:
    script = load_script()
    with pipeline_deployment(gateways=0, workers=options.workers, infra=options.infra,
                             model_dir=options.model_dir, data_parent=options.data_parent,
                             keep_data=options.keep_data,
                             partitions=options.partitions) as deployment:
        details = deployment.details
        prefix, bootstrap = details["topic_prefix"], details["kafka_bootstrap"]
        inbound_codec = codec_for("chat_message")
        reply_codec = codec_for("bot_reply")
        events = [(key, inbound_codec.encode(event))
                  for key, event in _backlog(options, script, prefix.rstrip("."))]
        replies = _follow(bootstrap, prefix + CHAT_OUTBOUND, details["partitions"])
        sampler = ProcessSampler()
        for name, pid in deployment.processes.items():
            sampler.add(name, pid)
        sampler.start()
        began = time.time()
        sampler.set_window(began, float("inf"))
        try:
            _produce_all(bootstrap, prefix + CHAT_INBOUND, events)
            seen, duplicated = _drain(replies, reply_codec, options.messages,
                                      time.monotonic() + options.drain_timeout)
            seconds = time.time() - began
        finally:
            sampler.stop()
            replies.close()
    report = sampler.report()
    replied = len(seen)
    result: dict[str, Any] = {
        "messages": options.messages,
        "replied": replied,
        "missing": options.messages - replied,
        "duplicated": duplicated,
        "seconds": round(seconds, 2),
        "throughput_msgs_per_s": round(replied / seconds, 1) if seconds else None,
    }
    # Per process and for the whole system, as e2e reports them.
    result.update(cpu_per_message(report["processes"], result, report["machine"]))
    return {**result, "processes": report["processes"], "machine": report["machine"],
            "deployment": details}


def _produce_all(bootstrap: str, topic: str, events: list[tuple[str, bytes]]) -> None:
    """Produce every event, keyed by conversation, and wait until the broker holds them.

    The producer is gone when this returns, before the broker it talks to is stopped."""
    producer = Producer({**bootstrap_config(bootstrap), "linger.ms": 5,
                         "partitioner": "murmur2_random", "enable.idempotence": True})
    for key, value in events:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
    if producer.flush(30):
        raise RuntimeError("the broker did not take the whole backlog within 30 s")


def _follow(bootstrap: str, topic: str, partitions: int) -> Consumer:
    """A consumer at the end of every partition of ``topic`` (no group is joined)."""
    consumer = Consumer({**bootstrap_config(bootstrap), "group.id": "parley-bench-unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    consumer.poll(0.5)  # resolves OFFSET_END before anything is produced
    return consumer


def _drain(consumer: Consumer, codec: Any, expected: int,
           deadline: float) -> tuple[set[str], int]:
    """Replies' ``in_reply_to`` until ``expected`` distinct ones came, or the deadline."""
    seen: set[str] = set()
    duplicated = 0
    while len(seen) < expected and time.monotonic() < deadline:
        for message in consumer.consume(500, timeout=0.1):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading replies failed: {error.str()}")
                continue
            in_reply_to = codec.decode(message.value())["payload"]["in_reply_to"]
            if in_reply_to in seen:
                duplicated += 1
            seen.add(in_reply_to)
    return seen, duplicated
