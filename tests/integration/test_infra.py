"""The embedded broker and Redis Cluster, with real processes."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource
from redis import Redis as SyncRedis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import AuthenticationError

from infra import EmbeddedInfra, ensure_topics
from infra.broker import kafka_metadata_ok
from infra.ports import find_free_ports, is_port_free
from infra.redis_cluster import CLUSTER_SLOTS, cluster_info
from kernel.credentials import CREDENTIALS_FILE
from kernel.errors import PortInUseError
from kernel.settings import Settings
from streams.security import (
    KafkaCredentials,
    RedisCredentials,
    bootstrap_config,
    kafka_client_config,
    redis_credentials,
)
from streams.state import REDIS_UNAVAILABLE, connect_cluster
from streams.topics import (
    CHAT_INBOUND,
    CHAT_OUTBOUND,
    CHAT_UNDERSTOOD,
    KB_DOCUMENTS,
    TopicSpec,
    dlq_of,
)
from tests.conftest import InfraAddresses


def _ports(infra: InfraAddresses) -> tuple[int, list[int]]:
    kafka_port = int(infra.kafka_bootstrap.rpartition(":")[2])
    redis_ports = [int(item.rpartition(":")[2]) for item in infra.redis_nodes.split(",")]
    return kafka_port, redis_ports


def _consume(consumer: Consumer, want: int, timeout: float = 15) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append((msg.key(), msg.value()))
    return got


# --- Redis Cluster ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_cluster_has_three_primaries_three_replicas_and_all_slots(
    redis_cluster: RedisCluster,
) -> None:
    assert len(redis_cluster.get_primaries()) == 3
    assert len(redis_cluster.get_replicas()) == 3
    info = await redis_cluster.cluster_info()
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == CLUSTER_SLOTS
    assert int(info["cluster_slots_ok"]) == CLUSTER_SLOTS
    assert int(info["cluster_known_nodes"]) == 6


def test_every_node_reports_cluster_ok(infra: InfraAddresses) -> None:
    host = infra.redis_nodes.split(",")[0].rpartition(":")[0]
    for port in _ports(infra)[1]:
        info = cluster_info(host, port)
        assert info is not None and info["cluster_state"] == "ok", port


@pytest.mark.asyncio
async def test_keys_round_trip_across_slots(redis_cluster: RedisCluster) -> None:
    prefix = uuid4().hex
    keys = {f"{prefix}:{i}": f"value-{i}" for i in range(50)}  # spread over all primaries
    for key, value in keys.items():
        assert await redis_cluster.set(key, value, ex=60)
    for key, value in keys.items():
        assert await redis_cluster.get(key) == value
    slots = {redis_cluster.keyslot(key) for key in keys}
    owners = {redis_cluster.get_node_from_key(key).name for key in keys}
    assert len(slots) > 1 and len(owners) == 3


# --- Kafka -----------------------------------------------------------------------


def test_settings_topics_exist_with_their_partitions(settings: Settings) -> None:
    topics = AdminClient(kafka_client_config(settings)).list_topics(timeout=10)
    expected = {
        CHAT_INBOUND: 4,
        CHAT_UNDERSTOOD: 4,
        CHAT_OUTBOUND: 4,
        dlq_of(CHAT_INBOUND): 1,
        KB_DOCUMENTS: 1,
    }
    for name, partitions in expected.items():
        meta = topics.topics[settings.topic(name)]
        assert meta.error is None
        assert len(meta.partitions) == partitions, name
    assert settings.consumer_group.startswith(settings.topic_prefix)


def test_ensure_topics_is_idempotent_and_sets_compaction(infra: InfraAddresses) -> None:
    prefix = f"e{uuid4().hex[:8]}."
    specs = [TopicSpec(f"{prefix}wide", 7), TopicSpec(f"{prefix}table", 2, compacted=True)]
    ensure_topics(infra.kafka_bootstrap, specs, timeout=15)
    ensure_topics(infra.kafka_bootstrap, specs, timeout=15)  # again: nothing to do
    admin = AdminClient(bootstrap_config(infra.kafka_bootstrap))
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[f"{prefix}wide"].partitions) == 7
    assert len(topics[f"{prefix}table"].partitions) == 2
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{prefix}table")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_produce_and_consume_with_assign(settings: Settings) -> None:
    topic = settings.topic(CHAT_INBOUND)
    producer = Producer({**bootstrap_config(settings.kafka_bootstrap), "linger.ms": 0})
    sent = [(f"conv-{i}".encode(), f"hello {i}".encode()) for i in range(20)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            **bootstrap_config(settings.kafka_bootstrap),
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
        }
    )
    try:
        # assign() skips the group protocol (a join waits out default session timeouts).
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
        got = _consume(consumer, len(sent))
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)


def test_consumer_group_subscribe_with_short_session_timeout(settings: Settings) -> None:
    topic = settings.topic(CHAT_OUTBOUND)
    producer = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    producer.produce(topic, key=b"k", value=b"v")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            **bootstrap_config(settings.kafka_bootstrap),
            "group.id": settings.consumer_group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "max.poll.interval.ms": 10000,
        }
    )
    try:
        consumer.subscribe([topic])
        assert _consume(consumer, 1, timeout=30) == [(b"k", b"v")]
    finally:
        consumer.close()


# --- authentication ----------------------------------------------------------------


def _refusals(config: dict[str, Any], seconds: float = 8) -> list[KafkaError]:
    """The errors a producer with ``config`` reports while it tries to reach the broker;
    fails if a metadata request is answered."""
    errors: list[KafkaError] = []
    producer = Producer({**config, "error_cb": errors.append, "reconnect.backoff.max.ms": 500})
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=3)
    deadline = time.monotonic() + seconds
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    return errors


def test_kafka_refuses_clients_without_credentials_or_with_a_wrong_password(
    settings: Settings,
) -> None:
    if not settings.kafka_username:
        pytest.skip("this Kafka does not authenticate (external, no PARLEY_KAFKA_USERNAME)")
    assert _refusals({"bootstrap.servers": settings.kafka_bootstrap})
    wrong = KafkaCredentials(settings.kafka_username, settings.kafka_password + "x")
    errors = _refusals(bootstrap_config(settings.kafka_bootstrap, wrong))
    assert KafkaError._AUTHENTICATION in {error.code() for error in errors}, errors
    assert any("SASL authentication error" in error.str() for error in errors), errors
    nobody = KafkaCredentials("nobody", settings.kafka_password)
    errors = _refusals(bootstrap_config(settings.kafka_bootstrap, nobody))
    assert KafkaError._AUTHENTICATION in {error.code() for error in errors}, errors
    # ... and the right one is taken.
    assert AdminClient(kafka_client_config(settings)).list_topics(timeout=10).brokers


@pytest.mark.asyncio
async def test_redis_refuses_clients_without_credentials_or_with_a_wrong_password(
    settings: Settings,
) -> None:
    if not settings.redis_username:
        pytest.skip("this Redis does not authenticate (external, no PARLEY_REDIS_USERNAME)")
    for host, port in _all_redis_nodes(settings):
        anonymous = SyncRedis(host=host, port=port, socket_timeout=5)
        with pytest.raises(AuthenticationError):  # NOAUTH: the default user is off
            anonymous.get("anything")
        anonymous.close()
        as_default = SyncRedis(host=host, port=port, username="default", password="",
                               socket_timeout=5)
        with pytest.raises(AuthenticationError):
            as_default.ping()
        as_default.close()
        wrong = SyncRedis(host=host, port=port, username=settings.redis_username,
                          password=settings.redis_password + "x", socket_timeout=5)
        with pytest.raises(AuthenticationError):  # WRONGPASS
            wrong.ping()
        wrong.close()
    cluster = connect_cluster(settings.redis_startup_nodes, fail_fast=True, credentials=(
        RedisCredentials(settings.redis_username, settings.redis_password + "x")))
    with pytest.raises(REDIS_UNAVAILABLE):
        await cluster.initialize()
    await cluster.aclose()
    right = connect_cluster(settings.redis_startup_nodes,
                            credentials=redis_credentials(settings))
    try:
        assert await right.ping()
    finally:
        await right.aclose()


def _all_redis_nodes(settings: Settings) -> list[tuple[str, int]]:
    host, first = settings.redis_startup_nodes[0]
    nodes = settings.redis_startup_nodes
    return nodes if len(nodes) > 1 else [(host, first + i) for i in range(6)]


def test_credentials_are_private_and_never_in_a_log(infra: InfraAddresses) -> None:
    if not isinstance(infra, EmbeddedInfra):
        pytest.skip("external infrastructure: its logs are not ours")
    path = infra.data_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for conf in [*infra.data_dir.glob("kafka/node-*/server.properties"),
                 *infra.data_dir.glob("redis/*/auth.conf")]:
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600, conf
    credentials = infra.credentials
    secrets = (credentials.kafka_password, credentials.kafka_broker_password,
               credentials.redis_password)
    logs = list(infra.log_dir.iterdir())
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), log


# --- lifecycle ---------------------------------------------------------------------


def test_a_second_stack_on_the_same_ports_fails_and_the_first_keeps_working(
    infra: InfraAddresses, tmp_path: Path
) -> None:
    kafka_port, redis_ports = _ports(infra)
    # Free bus ports: the default (port + 10000) is out of range for high test ports.
    bus_ports = find_free_ports(len(redis_ports))
    first_try = EmbeddedInfra(
        tmp_path / "a", kafka_port=kafka_port, redis_ports=redis_ports, redis_bus_ports=bus_ports
    )
    with pytest.raises(PortInUseError) as caught:
        first_try.start(10)
    assert caught.value.port == kafka_port
    assert str(kafka_port) in str(caught.value)
    first_try.stop()  # nothing of its own to stop; must not touch the running stack

    free_kafka, free_controller = find_free_ports(2)
    second = EmbeddedInfra(
        tmp_path / "b", kafka_ports=[free_kafka], controller_ports=[free_controller],
        redis_ports=redis_ports, redis_bus_ports=bus_ports,
    )
    with pytest.raises(PortInUseError) as caught:
        second.start(10)
    assert caught.value.port == redis_ports[0]
    assert str(redis_ports[0]) in str(caught.value)
    second.stop()

    assert kafka_metadata_ok(infra.kafka_bootstrap)
    host = infra.redis_nodes.split(",")[0].rpartition(":")[0]
    info = cluster_info(host, redis_ports[0])
    assert info is not None and info["cluster_state"] == "ok"


def _small_stack(data_dir: Path, ports: list[int]) -> EmbeddedInfra:
    """One Kafka node, 3 Redis primaries and no replicas: the whole lifecycle, without
    waiting for replicas to sync."""
    return EmbeddedInfra(
        data_dir,
        kafka_ports=ports[0:1],
        controller_ports=ports[1:2],
        redis_ports=ports[2:5],
        redis_bus_ports=ports[5:8],
        redis_replicas=0,
    )


def test_stop_is_idempotent_and_frees_the_ports(tmp_path: Path) -> None:
    # 3 primaries, no replicas: the same lifecycle, without waiting for replicas to sync.
    ports = find_free_ports(8)
    stack = _small_stack(tmp_path, ports)
    with stack:
        assert stack.status()["up"]
        assert (tmp_path / "pids.json").exists()
        assert (tmp_path / "logs" / "kafka-1.log").exists()
        assert (tmp_path / "logs" / f"redis-{ports[2]}.log").exists()
    stack.stop()
    stack.stop()
    assert not (tmp_path / "pids.json").exists()
    for port in ports:
        assert is_port_free("127.0.0.1", port), port
    report = stack.status(timeout=0.5)
    assert not report["up"]
    assert report["redis"]["cluster_state"] == "down"


def test_a_restarted_stack_keeps_its_topics_messages_offsets_and_keys(tmp_path: Path) -> None:
    ports = find_free_ports(8)
    stack = _small_stack(tmp_path, ports)
    topic = f"kept-{uuid4().hex[:8]}"
    with stack:
        ensure_topics(stack.kafka_bootstrap, [TopicSpec(topic, 2)],
                      credentials=stack.kafka_credentials)
        producer = Producer({**_kafka(stack), "acks": "all"})
        for i in range(3):
            producer.produce(topic, f"v{i}".encode(), key=f"k{i}".encode())
        assert producer.flush(15) == 0
        consumer = Consumer({**_kafka(stack), "group.id": "g",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        assert len(_consume(consumer, 2, timeout=30)) == 2
        consumer.commit(asynchronous=False)  # the group has read 2 of 3 (or all 3)
        consumer.close()
        redis = _redis_client(stack)
        redis.set("parley:{t:c}:kept", "yes")
        # A transaction too: the append-only file replays MULTI/EXEC with the rights of
        # the (disabled) default user.
        with redis.pipeline(transaction=True) as transaction:
            transaction.set("parley:{t:c}:multi", "1").incr("parley:{t:c}:multi")
            transaction.execute()
        redis.close()
    stack.stop()

    again = _small_stack(tmp_path, ports)
    with again:
        assert topic in AdminClient(_kafka(again)).list_topics(timeout=10).topics
        everything = Consumer({**_kafka(again), "group.id": "all",
                               "auto.offset.reset": "earliest"})
        everything.subscribe([topic])
        assert sorted(_consume(everything, 3, timeout=30)) == [
            (f"k{i}".encode(), f"v{i}".encode()) for i in range(3)]
        everything.close()
        redis = _redis_client(again)
        assert redis.get("parley:{t:c}:kept") == "yes"
        assert redis.get("parley:{t:c}:multi") == "2"
        redis.close()


def _kafka(stack: EmbeddedInfra) -> dict[str, Any]:
    """A client's configuration for ``stack`` (its own credentials, not the session's)."""
    return bootstrap_config(stack.kafka_bootstrap, stack.kafka_credentials)


def _redis_client(stack: EmbeddedInfra) -> SyncRedisCluster:
    credentials = stack.redis_credentials
    return SyncRedisCluster(host=stack.host, port=stack.redis_ports[0], decode_responses=True,
                            username=credentials.username, password=credentials.password)
