"""An agent's adaptive batches from a real Faust stream on the real broker.

With a backlog waiting, batches fill up to their size (Faust's stream iterator
alone hands out one event per turn of the event loop); every event is processed
once, in order within its partition, and a clean stop commits them all. Each
batch records how old its oldest event was when taken.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from infra.ports import find_free_ports
from kernel.settings import Settings
from streams.app import create_app, raw_topic
from streams.batching import process_batches
from streams.metrics import AGENT_EVENT_AGE_SECONDS
from streams.security import aiokafka_sasl, bootstrap_config, kafka_credentials
from streams.topics import CHAT_INBOUND, chat_partitions

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

BACKLOG = 600
BATCH = 100


def _busy(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _committed(settings: Settings, topic: str) -> int:
    """Offsets the worker's group committed on ``topic``, summed over its partitions."""
    consumer = Consumer({**bootstrap_config(settings.kafka_bootstrap),
                         "group.id": settings.consumer_group})
    try:
        count = chat_partitions(settings.chat_partitions)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


async def test_a_backlog_is_taken_in_full_batches_once_and_in_order(settings: Settings) -> None:
    settings = settings.replace(worker_web_port=find_free_ports(1)[0])
    topic = settings.topic(CHAT_INBOUND)
    sent = [(f"c{i % 8}".encode(), f"{i:04d}".encode()) for i in range(BACKLOG)]
    producing_began = time.time()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                **aiokafka_sasl(kafka_credentials(settings)))
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value, key=key)
                               for key, value in sent])
    finally:
        await producer.stop()

    produced_by = time.time()
    ctx = create_app(settings)
    batches: list[list[tuple[bytes, bytes]]] = []
    done = asyncio.Event()

    async def process(events: list[Any]) -> None:
        batches.append([(e.message.key, e.message.value) for e in events])
        _busy(0.002)  # an agent's CPU work holds the loop
        await asyncio.sleep(0)  # then a quick await, such as a produce
        if sum(map(len, batches)) >= BACKLOG:
            done.set()

    @ctx.app.agent(raw_topic(ctx.app, topic), name=f"{settings.topic_prefix}probe")
    async def probe(stream: Any) -> None:
        await process_batches(stream, BATCH, process, "probe", ctx.dead_letters.send)

    age = AGENT_EVENT_AGE_SECONDS.labels("probe")
    ages_before = _sum_and_count(age)
    started = time.time()
    await ctx.app.start()
    try:
        await asyncio.wait_for(done.wait(), 60)
        taken_by = time.time()
        await asyncio.sleep(1)  # anything delivered twice would come now
    finally:
        await ctx.app.stop()

    received = [record for batch in batches for record in batch]
    assert sorted(received) == sorted(sent), "every event once"
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in received:
        by_key[key].append(value)
    assert all(values == sorted(values) for values in by_key.values()), "in order per key"
    full = [len(b) for b in batches if len(b) == BATCH]
    assert len(full) >= BACKLOG // BATCH - 2, [len(b) for b in batches]
    assert _committed(settings, topic) == BACKLOG, "a clean stop commits what was processed"
    # Every batch's oldest event was produced before the worker started, and taken after.
    total, count = (now - before for now, before in zip(_sum_and_count(age), ages_before,
                                                        strict=True))
    assert count == len(batches)
    assert started - produced_by <= total / count <= taken_by - producing_began


def _sum_and_count(histogram: Any) -> tuple[float, float]:
    samples = {s.name: s.value for metric in histogram.collect() for s in metric.samples}
    return samples["parley_agent_event_age_seconds_sum"], samples[
        "parley_agent_event_age_seconds_count"]
