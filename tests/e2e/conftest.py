"""End-to-end fixtures: the real stack (gateway and worker processes) on real infra.

``pipeline`` is parametrized over where the broker and Redis Cluster come from:
``embedded`` (the session's Apache Kafka node + 6-node Valkey cluster) and
``docker`` (Apache Kafka and a Redis Cluster in testcontainers; skipped when no
Docker engine answers).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from agents.dialogue.loader import load_bot
from agents.dialogue.training import ensure_nlu_model
from agents.knowledge.demo import ensure_demo_index
from examples import DEMO
from infra.ports import find_free_ports
from infra.topics import broker_count, ensure_topics
from kernel.settings import Settings
from parley.stack import Stack
from streams.security import kafka_client_config, kafka_credentials, redis_credentials
from streams.topics import all_topics
from tests.conftest import InfraAddresses
from tests.tenants import put_tenants_sync, test_tenant_config


@dataclass
class Pipeline:
    stack: Stack
    gateway_urls: list[str]

    @property
    def url(self) -> str:
        return self.gateway_urls[0]

    @property
    def settings(self) -> Settings:
        return self.stack.settings


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domain's NLU model, trained once per test session."""
    return ensure_nlu_model(load_bot(DEMO.folder), tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domain's knowledge index, built once per test session."""
    return ensure_demo_index(tmp_path_factory.mktemp("kb"), DEMO.knowledge)


@functools.cache
def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return result.returncode == 0


@pytest.fixture(scope="session")
def docker_infra() -> Iterator[tuple[str, str]]:
    """Apache Kafka (KRaft) and a 6-node Redis Cluster in containers."""
    if not docker_available():
        pytest.skip("Docker engine not available: the testcontainers variant needs one "
                    "(the embedded variant covers the same tests)")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka, \
            DockerContainer("grokzen/redis-cluster:7.0.10") \
            .with_env("IP", "0.0.0.0") \
            .with_bind_ports(7000, 27000).with_bind_ports(7001, 27001) \
            .with_bind_ports(7002, 27002) as redis:
        wait_for_logs(redis, "Cluster state changed: ok", timeout=60)
        yield kafka.get_bootstrap_server(), "127.0.0.1:27000"


@dataclass(frozen=True)
class UnauthenticatedInfra:
    """Infrastructure whose clients need no credentials (the Docker variant's)."""

    kafka_bootstrap: str
    redis_nodes: str

    def client_settings(self) -> dict[str, str]:
        return {"kafka_bootstrap": self.kafka_bootstrap, "redis_nodes": self.redis_nodes}


def make_settings(infra: InfraAddresses, data_dir: Path, model: Path) -> Settings:
    """Settings of a stack on ``infra``: its addresses and credentials, which the stack's
    processes get in their environment."""
    prefix = f"e{uuid.uuid4().hex[:8]}."
    settings = Settings.from_env(
        {}, **infra.client_settings(), topic_prefix=prefix,
        consumer_group=f"{prefix}workers", data_dir=data_dir,
        nlu_model_dir=str(model), log_json=True,
        # As `parley up` runs: the chat page gets tokens from /dev/token (browser tests).
        dev_mode=True,
        # The pipeline under test, not the users' rate limits (tests/integration has those).
        rate_default="1000000:1000000", rate_tenant="off",
    )
    bootstrap, credentials = settings.kafka_bootstrap, kafka_credentials(settings)
    brokers = broker_count(bootstrap, credentials=credentials)
    ensure_topics(bootstrap, all_topics(prefix=prefix, brokers=brokers), credentials=credentials)
    return settings


def start_pipeline(settings: Settings, kb_index: Path, gateways: int = 2,
                   workers: int = 1) -> Pipeline:
    # The tenants ChatClient connects as (tests/tenants.py), in this pipeline's Redis.
    put_tenants_sync(settings.redis_nodes, [test_tenant_config("e2e"), test_tenant_config("demo")],
                     redis_credentials(settings))
    stack = Stack(settings)
    stack.model_dir = Path(settings.nlu_model_dir)
    stack.kb_index = kb_index
    stack.start_crm(port=0)  # the reference CRM the demo bot's actions call
    ports = find_free_ports(gateways + workers)
    for port in ports[:gateways]:
        stack.start_gateway(port)
    for port in ports[gateways:]:
        stack.start_worker(port)
    stack.wait_ready(timeout=90)
    return Pipeline(stack, [f"ws://127.0.0.1:{port}" for port in ports[:gateways]])


def produce(settings: Settings, topic: str, key: str, *values: bytes) -> None:
    """Put records on ``settings.topic(topic)`` as another client would, and wait for them.

    Several values are sent in one request, so a consumer reads them in one batch."""
    producer = Producer(kafka_client_config(settings))
    for value in values:
        producer.produce(settings.topic(topic), key=key, value=value)
    assert producer.flush(10) == 0, "the broker took the records"


def read_topic(settings: Settings, topic: str) -> list[Message]:
    """Every record on ``settings.topic(topic)`` so far, read to the end of each partition."""
    name = settings.topic(topic)
    consumer = Consumer(kafka_client_config(
        settings, **{"group.id": f"audit-{uuid.uuid4().hex[:8]}", "enable.partition.eof": True,
                     "fetch.wait.max.ms": 10}))
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        pending, records = set(partitions), []
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                records.append(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
        assert not pending, f"{name}: partitions {sorted(pending)} not read to the end"
        return records
    finally:
        consumer.close()


@pytest.fixture(scope="module", params=["embedded", "docker"])
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             demo_model: Path, demo_index: Path) -> Iterator[Pipeline]:
    """Two gateways and one worker, shared by the tests of a module."""
    infra: InfraAddresses
    if request.param == "docker":
        infra = UnauthenticatedInfra(*request.getfixturevalue("docker_infra"))
    else:
        infra = request.getfixturevalue("infra")
    settings = make_settings(infra, tmp_path_factory.mktemp("e2e"), demo_model)
    running = start_pipeline(settings, demo_index)
    yield running
    running.stack.stop()
