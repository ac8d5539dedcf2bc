"""The workers' Kafka transport against the real broker (streams/transport.py).

Faust's consumer runs on the worker's own event loop, not in a thread of its own:
records still reach the agents, offsets are still committed, and the app still
stops cleanly.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from infra.ports import find_free_ports
from parley.settings import Settings
from streams.app import create_app, raw_topic
from streams.topics import CHAT_INBOUND

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def _committed(settings: Settings, topic: str) -> int:
    """Offsets the worker's group committed on ``topic``, summed over its partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": settings.consumer_group})
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.chat_partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


async def test_the_consumer_runs_on_the_workers_loop(settings: Settings) -> None:
    settings = settings.replace(worker_web_port=find_free_ports(1)[0])
    ctx = create_app(settings)
    topic = settings.topic(CHAT_INBOUND)
    received: list[bytes] = []
    all_received = asyncio.Event()
    sent = [f"m{i}".encode() for i in range(40)]

    @ctx.app.agent(raw_topic(ctx.app, topic), name=f"{settings.topic_prefix}probe")
    async def probe(stream: Any) -> None:
        async for value in stream:
            received.append(value)
            if len(received) == len(sent):
                all_received.set()

    threads_before = set(threading.enumerate())
    await ctx.app.start()
    try:
        consumer_thread = ctx.app.consumer._thread
        assert consumer_thread.thread_loop is asyncio.get_running_loop()
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for i, value in enumerate(sent):
                await producer.send_and_wait(topic, value, key=f"c{i % 8}".encode())
        finally:
            await producer.stop()
        await asyncio.wait_for(all_received.wait(), 60)
        # The consumer started no thread running an event loop (mode's WorkerThread).
        started = set(threading.enumerate()) - threads_before
        assert not [t for t in started if type(t).__name__ == "WorkerThread"], started
    finally:
        await ctx.app.stop()

    assert sorted(received) == sorted(sent)
    assert not consumer_thread.thread_loop.is_closed(), "the worker's loop is not closed"
    assert _committed(settings, topic) == len(sent), "a clean stop commits what was processed"
