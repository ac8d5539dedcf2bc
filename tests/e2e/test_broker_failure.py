"""A Kafka broker dies while users chat: nothing acknowledged is lost or answered twice.

Three KRaft nodes on loopback (``parley infra up --brokers 3``'s layout): every
partition has three replicas and ``min.insync.replicas=2``, and the gateway
acknowledges a message only once the in-sync replicas hold it (acks=all). One
node is killed with SIGKILL mid-stream, leaders and the group coordinator move
to the other two, and every acknowledged message is still answered exactly once,
in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from infra import EmbeddedInfra
from infra.ports import find_free_ports
from streams.security import bootstrap_config
from streams.topics import CHAT_INBOUND
from tests.e2e.conftest import Pipeline, make_settings, start_pipeline
from tests.e2e.test_worker_crash import Conversations, assert_topic_repeats_are_resends

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def three_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedInfra]:
    ports = find_free_ports(12)
    cluster = EmbeddedInfra(
        tmp_path_factory.mktemp("three-brokers"),
        brokers=3,
        kafka_ports=ports[0:3],
        controller_ports=ports[3:6],
        redis_ports=ports[6:9],  # 3 primaries, no replicas: Redis is not what this tests
        redis_bus_ports=ports[9:12],
        redis_replicas=0,
    )
    cluster.start(timeout=120)
    yield cluster
    cluster.stop()


@pytest.fixture
def pipeline_on_three(three_brokers: EmbeddedInfra, tmp_path: Path, demo_model: Path,
                      demo_index: Path) -> Iterator[Pipeline]:
    settings = make_settings(three_brokers, tmp_path, demo_model)
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


def _describe_replicas(cluster: EmbeddedInfra, topic: str) -> list[Any]:
    config = bootstrap_config(cluster.kafka_bootstrap, cluster.kafka_credentials)
    meta = AdminClient(config).list_topics(topic, timeout=10)
    return list(meta.topics[topic].partitions.values())


async def test_a_broker_killed_mid_stream_loses_and_repeats_nothing(
    three_brokers: EmbeddedInfra, pipeline_on_three: Pipeline
) -> None:
    inbound = pipeline_on_three.settings.topic(CHAT_INBOUND)
    partitions = _describe_replicas(three_brokers, inbound)
    assert all(len(p.replicas) == 3 for p in partitions), "replicated on all three"

    # Kill a broker that leads some of chat.inbound's partitions.
    leaders = {p.leader for p in partitions}
    victim_id = sorted(leaders)[0]
    victim = next(s for s in three_brokers.services if s.name == f"kafka-{victim_id}")

    async with Conversations(pipeline_on_three.url) as chats:
        talking = chats.talk(12)
        await asyncio.sleep(3)
        assert victim.process is not None
        victim.process.kill()
        await talking
        await chats.wait_answered(within=90)

    chats.assert_answered_exactly_once()
    assert_topic_repeats_are_resends(pipeline_on_three, chats)
    after = _describe_replicas(three_brokers, inbound)
    assert all(p.leader != victim_id for p in after), "leadership moved off the dead broker"
