"""Apache Kafka's distribution checks and node configuration, without starting a JVM."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.broker import (
    KafkaNode,
    broker_properties,
    format_storage,
    kafka_nodes,
    new_cluster_id,
)
from infra.kafka_dist import (
    KAFKA_VERSION,
    KafkaDist,
    install_kafka,
    parse_java_version,
    resolve_kafka,
)
from infra.waiting import Deadline
from kernel.credentials import Credentials
from kernel.errors import BinaryNotFoundError, InfraError
from streams.topics import TopicDefaults, TopicSpec, all_topics

CREDENTIALS = Credentials.generate()


def _script(path: Path, body: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
        ("no version here", None),
    ],
)
def test_java_versions_are_read_as_java_prints_them(output: str, major: int | None) -> None:
    assert parse_java_version(output) == major


def test_no_java_is_named_with_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BinaryNotFoundError) as caught:
        resolve_kafka(tmp_path / "home")
    assert "java" in str(caught.value) and "OpenJDK 17" in str(caught.value)


def test_a_java_older_than_17_is_refused_with_the_version_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / "jdk" / "bin" / "java", "echo 'openjdk version \"11.0.22\"' >&2")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(InfraError, match=r"needs Java 17 or newer; .* is Java 11"):
        resolve_kafka(tmp_path / "home")


def _java_17(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "jdk" / "bin" / "java", "echo 'openjdk version \"17.0.15\"' >&2")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))


def test_missing_jars_without_install_say_which_command_fetches_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _java_17(tmp_path, monkeypatch)
    with pytest.raises(BinaryNotFoundError, match="parley infra install"):
        resolve_kafka(tmp_path / "home", install=False)


def test_no_maven_is_named_with_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _java_17(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BinaryNotFoundError, match=r"mvn.*apt-get install maven"):
        install_kafka(tmp_path / "home")


def test_an_unreachable_maven_central_is_said_so_and_leaves_no_partial_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _java_17(tmp_path, monkeypatch)
    _script(
        tmp_path / "bin" / "mvn",
        "echo '[ERROR] Failed to execute goal: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom from/to central: Unknown host repo.maven.apache.org'; "
        "exit 1",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    home = tmp_path / "home"
    with pytest.raises(InfraError, match=r"Maven Central .* is unreachable") as caught:
        install_kafka(home)
    assert KAFKA_VERSION in str(caught.value)
    assert not (home / "libs").exists()


def test_an_installed_distribution_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _java_17(tmp_path, monkeypatch)
    libs = tmp_path / "home" / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").write_bytes(b"")
    dist = resolve_kafka(tmp_path / "home")
    assert dist.libs == libs and dist.classpath == f"{libs}/*"


def test_one_node_is_a_combined_broker_and_controller_with_single_copies(
    tmp_path: Path,
) -> None:
    (node,) = kafka_nodes(tmp_path, "127.0.0.1", [9092], [9093])
    props = broker_properties(node, [node], CREDENTIALS)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "CLIENT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["log.dirs"] == str(tmp_path.absolute() / "kafka" / "node-1" / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["auto.create.topics.enable"] == "false"


def test_three_nodes_form_one_quorum_with_the_shared_replication_settings(
    tmp_path: Path,
) -> None:
    nodes = kafka_nodes(tmp_path, "127.0.0.1", [9092, 9094, 9096], [9093, 9095, 9097])
    defaults = TopicDefaults.load()
    assert (defaults.replication_factor, defaults.min_insync_replicas) == (3, 2)
    for node in nodes:
        props = broker_properties(node, nodes, CREDENTIALS)
        assert props["controller.quorum.voters"] == (
            "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097")
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
    assert len({broker_properties(n, nodes, CREDENTIALS)["log.dirs"] for n in nodes}) == 3


def test_topics_follow_the_cluster_size() -> None:
    for spec in all_topics(brokers=3):
        assert spec.replication_factor == 3
        assert spec.config()["min.insync.replicas"] == "2"
    for spec in all_topics(brokers=1):
        assert spec.replication_factor == 1
        assert spec.config()["min.insync.replicas"] == "1"


def test_a_cluster_is_never_formatted_in_part(tmp_path: Path) -> None:
    nodes = kafka_nodes(tmp_path, "127.0.0.1", [9092, 9094, 9096], [9093, 9095, 9097])
    nodes[0].log_dirs.mkdir(parents=True)
    (nodes[0].log_dirs / "meta.properties").write_text("cluster.id=x\n")
    dist = KafkaDist(java="/nonexistent/java", libs=tmp_path)
    with pytest.raises(InfraError, match="formatted whole"):
        format_storage(dist, nodes, Deadline(5), CREDENTIALS)


def test_every_listener_authenticates_and_no_client_password_is_in_the_properties(
    tmp_path: Path,
) -> None:
    (node,) = kafka_nodes(tmp_path, "127.0.0.1", [9092], [9093])
    props = broker_properties(node, [node], CREDENTIALS)
    protocols = dict(item.split(":") for item in props["listener.security.protocol.map"].split(","))
    assert protocols == {"CLIENT": "SASL_PLAINTEXT", "CONTROLLER": "SASL_PLAINTEXT"}
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["inter.broker.listener.name"] == "CLIENT"
    jaas = props["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert f'username="{CREDENTIALS.kafka_broker_username}"' in jaas
    # The clients' user lives in the cluster's metadata (SCRAM), not in the broker's file.
    assert not any(CREDENTIALS.kafka_password in value for value in props.values())


def _formatted(tmp_path: Path) -> list[KafkaNode]:
    nodes = kafka_nodes(tmp_path, "127.0.0.1", [9092], [9093])
    nodes[0].log_dirs.mkdir(parents=True)
    (nodes[0].log_dirs / "meta.properties").write_text("cluster.id=x\n")
    return nodes


def test_storage_formatted_before_kafka_authenticated_is_refused_with_what_to_do(
    tmp_path: Path,
) -> None:
    nodes = _formatted(tmp_path)  # as a node formatted before this change: no SCRAM record
    dist = KafkaDist(java="/nonexistent/java", libs=tmp_path)
    with pytest.raises(InfraError) as caught:
        format_storage(dist, nodes, Deadline(5), CREDENTIALS)
    message = str(caught.value)
    assert "before Parley's brokers required SASL/SCRAM" in message
    assert f"Remove {tmp_path.absolute() / 'kafka'}" in message
    # The properties are written anyway, readable by their owner only: they hold a password.
    assert stat.S_IMODE(nodes[0].properties_path.stat().st_mode) == 0o600


def test_storage_formatted_with_other_broker_credentials_is_refused(tmp_path: Path) -> None:
    nodes = _formatted(tmp_path)
    (tmp_path / "kafka" / "scram.json").write_text(
        '{"mechanism": "SCRAM-SHA-512", "broker": "0123", "users": ["parley", "broker"]}')
    dist = KafkaDist(java="/nonexistent/java", libs=tmp_path)
    with pytest.raises(InfraError, match="other broker credentials than those in"):
        format_storage(dist, nodes, Deadline(5), CREDENTIALS)


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(cid) == 22 and "=" not in cid for cid in ids)
    # The storage tool's command line reads "-..." as an option (1 random id in 64).
    assert not any(cid.startswith("-") for cid in ids)


def test_no_codec_is_named_as_the_topic_config_names_it() -> None:
    # Kafka's topic config calls it "uncompressed"; the clients call it "none" (librdkafka)
    # or None (aiokafka): "none" as a topic config is refused by the broker.
    assert TopicSpec("t", 1, compression="none").config()["compression.type"] == "uncompressed"
    assert TopicSpec("t", 1, compression="lz4").config()["compression.type"] == "lz4"
