"""Every Parley producer puts a conversation on the same partition of a topic.

The gateway produces with librdkafka, the workers with aiokafka; both must use
Kafka's standard murmur2 key partitioner, so that any producer (and any
standard Kafka client added later) keeps a conversation on one partition.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.bus import InboundProducer
from kernel.settings import Settings
from streams.app import send
from streams.security import aiokafka_sasl, kafka_credentials
from streams.topics import CHAT_INBOUND

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_gateway_and_workers_partition_keys_alike(settings: Settings) -> None:
    topic = settings.topic(CHAT_INBOUND)
    keys = [f"c-{i:03d}" for i in range(40)]

    gateway = InboundProducer(settings.kafka_bootstrap, linger_ms=0)
    gateway.start()
    try:
        gateway_partitions = [await gateway.send(topic, key, b"x") for key in keys]
    finally:
        await gateway.close()

    worker = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                **aiokafka_sasl(kafka_credentials(settings)))
    await worker.start()
    try:
        # The workers' path (streams.app.send: batches by partition), one key a call so
        # that each delivery names its key's partition; then all in one call, twice
        # (the partitions come from memory the second time), read back below.
        faust_topic = SimpleNamespace(get_topic_name=lambda: topic, app=SimpleNamespace(
            producer=SimpleNamespace(_ensure_producer=lambda: worker)))
        sent = [(await (await send(faust_topic, [(k.encode(), b"x")])))[0] for k in keys]
        together = [(k.encode(), f"{k}/{n}".encode()) for n in range(2) for k in keys]
        await (await send(faust_topic, together))
        # and aiokafka's own send, for reference
        plain = await asyncio.gather(*[await worker.send(topic, b"x", key=k.encode())
                                       for k in keys])
    finally:
        await worker.stop()

    assert len(set(gateway_partitions)) > 1, "keys spread over the partitions"
    assert gateway_partitions == [metadata.partition for metadata in sent]
    assert gateway_partitions == [metadata.partition for metadata in plain]

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
        **aiokafka_sasl(kafka_credentials(settings)),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        read: dict[int, list[bytes]] = {}
        stamped: list[int] = []  # Kafka CreateTime, ms
        deadline = asyncio.get_running_loop().time() + 20
        while sum(map(len, read.values())) < len(together):
            assert asyncio.get_running_loop().time() < deadline, "records missing"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                ours = [r for r in records if r.value.startswith(b"c-")]
                read.setdefault(tp.partition, []).extend(r.value for r in ours)
                stamped.extend(r.timestamp for r in ours)
    finally:
        await consumer.stop()
    wanted = {p: [v for k, v in together if gateway_partitions[keys.index(k.decode())] == p]
              for p in set(gateway_partitions)}
    assert {p: v for p, v in read.items() if v} == wanted  # each partition in send order
    assert all(0 < time.time() * 1000 - t < 60_000 for t in stamped)  # stamped when sent
