"""Apache Kafka nodes in KRaft mode: their configuration, storage format and process.

Each node is one JVM running ``kafka.Kafka server.properties`` with both roles
(``process.roles=broker,controller``), as Kafka's own ``kafka-server-start.sh``
runs it, on two loopback ports: one for clients, one for the controller quorum.
Its data (``log.dirs``) lives under ``<data_dir>/kafka/node-<id>/``, so a
restarted node keeps every topic. Storage is formatted once
(``kafka.tools.StorageTool format``), the first time a node's folder is empty;
every node of a cluster is formatted with the same cluster id, kept in
``<data_dir>/kafka/cluster.id``.

Every listener authenticates (kernel/credentials.py holds the secrets):

* ``CLIENT`` (clients and replication between brokers): SASL/SCRAM-SHA-512. SCRAM
  credentials live in the cluster's metadata; ``StorageTool format --add-scram``
  writes the clients' user and the brokers' user there when a node is formatted.
* ``CONTROLLER`` (the KRaft quorum): SASL/PLAIN with the brokers' user, checked
  against the node's own configuration. A controller cannot use SCRAM: it must
  authenticate its peers before it has read the metadata that holds SCRAM users.

Both are plaintext on the wire, bound to loopback. ``server.properties`` carries
the brokers' password, so it is written with mode 0600. Storage formatted before
Kafka required SASL holds no SCRAM users: :func:`format_storage` refuses it with
what to do (a file beside ``cluster.id`` records that the users were written).

::

    nodes = kafka_nodes(Path(".parley"), "127.0.0.1", ports=[9092], controller_ports=[9093])
    format_storage(dist, nodes, deadline, Credentials.generate())
    processes = [node_process(dist, node, log_dir) for node in nodes]
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.kafka_dist import KafkaDist
from infra.ports import port_accepts
from infra.process import ServiceProcess
from infra.waiting import Deadline, wait_until
from kernel.credentials import CREDENTIALS_FILE, Credentials
from kernel.errors import InfraError
from streams.security import (
    SCRAM_MECHANISM,
    KafkaCredentials,
    process_kafka_credentials,
    sasl_config,
)
from streams.topics import TopicDefaults

__all__ = [
    "HEAP",
    "KafkaNode",
    "admin_client",
    "broker_properties",
    "format_storage",
    "kafka_metadata_ok",
    "kafka_nodes",
    "new_cluster_id",
    "node_process",
    "wait_brokers",
]

logger = logging.getLogger(__name__)

#: The JVM heap of each node, fixed (-Xms = -Xmx) so the broker's memory is bounded
#: and known. Kafka's scripts default to 1 GB; the embedded load (a few thousand small
#: messages a second) keeps the live set far below this.
HEAP = "512m"
#: Kafka's scripts' GC flags, plus: fail fast on OOM instead of limping on.
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker + controller node on loopback."""

    node_id: int
    host: str
    port: int
    controller_port: int
    data_dir: Path

    @property
    def name(self) -> str:
        return f"kafka-{self.node_id}"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()


def kafka_nodes(
    data_dir: Path, host: str, ports: Sequence[int], controller_ports: Sequence[int]
) -> list[KafkaNode]:
    if len(ports) != len(controller_ports):
        raise ValueError("every Kafka node needs one client port and one controller port")
    root = Path(data_dir).absolute() / "kafka"
    return [
        KafkaNode(i, host, port, controller, root / f"node-{i}")
        for i, (port, controller) in enumerate(zip(ports, controller_ports, strict=True), 1)
    ]


def _jaas(module: str, username: str, password: str, **users: str) -> str:
    """A JAAS login line (values never hold quotes: kernel.credentials checks them)."""
    options = [f'username="{username}"', f'password="{password}"']
    options += [f'user_{name}="{secret}"' for name, secret in users.items()]
    return f"{module} required {' '.join(options)};"


def security_properties(credentials: Credentials) -> dict[str, str]:
    """The listeners' authentication: SCRAM for clients and replication, PLAIN for the
    controller quorum (see the module's docstring)."""
    broker, password = credentials.kafka_broker_username, credentials.kafka_broker_password
    return {
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.client.scram-sha-512.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.scram.ScramLoginModule", broker, password),
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule", broker, password,
            **{broker: password}),
        "sasl.mechanism.controller.protocol": "PLAIN",
    }


def broker_properties(
    node: KafkaNode, cluster: Sequence[KafkaNode], credentials: Credentials
) -> dict[str, str]:
    """``server.properties`` of ``node`` in ``cluster``: replication and ISR from the
    shared topic configuration (``streams/topics.toml``) for the cluster's size."""
    defaults = TopicDefaults.load().for_brokers(len(cluster))
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in cluster)
    replicas = str(defaults.replication_factor)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"CLIENT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": f"CLIENT://{node.host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "CLIENT",
        **security_properties(credentials),
        "log.dirs": str(node.log_dirs),
        # Topics are created by `parley infra topics` with their configuration; a typo in a
        # topic name must fail, not create a stray topic with defaults.
        "auto.create.topics.enable": "false",
        "default.replication.factor": replicas,
        "min.insync.replicas": str(defaults.min_insync_replicas),
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": str(defaults.min_insync_replicas),
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": str(defaults.min_insync_replicas),
        # Fewer than the default 50: each is a log with files and a leader to elect, and
        # one machine's handful of consumer groups needs no more.
        "offsets.topic.num.partitions": "10",
        # A consumer group forms as soon as its first member joins (the default waits 3 s
        # for more); workers and tests join one at a time.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "60000",
        # A node that stops heartbeating is fenced, and its partitions get new leaders,
        # after 3 s (Kafka's default is 9 s, near the gateway's 10 s delivery timeout, so
        # a dead node left acks unconfirmed); heartbeats on loopback cost nothing.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # Two cores: Kafka's defaults (3 network, 8 I/O threads) only add context switches.
        "num.network.threads": "2",
        "num.io.threads": "4",
    }


def _write_properties(path: Path, properties: dict[str, str]) -> None:
    """Write ``server.properties`` readable by its owner only: it holds a password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by Parley (infra/broker.py) at every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in properties.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file from before this change may be 0644
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")


#: Beside ``cluster.id``: written when the storage was formatted with SCRAM users.
_SCRAM_RECORD = "scram.json"


def _broker_fingerprint(credentials: Credentials) -> str:
    """A hash of the brokers' user, to notice a credentials file that is not the one
    the storage was formatted with (its password is 256 random bits: no salt needed)."""
    user = f"{credentials.kafka_broker_username}:{credentials.kafka_broker_password}"
    return hashlib.sha256(user.encode()).hexdigest()


def _check_scram_record(root: Path, credentials: Credentials) -> None:
    """Refuse storage formatted without SCRAM users, or with other brokers' credentials."""
    try:
        record = json.loads((root / _SCRAM_RECORD).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise InfraError(
            f"Kafka's storage in {root} was formatted before Parley's brokers required "
            "SASL/SCRAM authentication and holds no users to authenticate as. Remove "
            f"{root} and start again to format it with credentials (this deletes every "
            "topic; `parley infra down` first if it runs)"
        )
    if record.get("broker") != _broker_fingerprint(credentials):
        raise InfraError(
            f"Kafka's storage in {root} was formatted with other broker credentials than "
            f"those in {root.parent / CREDENTIALS_FILE}: restore that file, or remove {root} "
            "to format the storage again (this deletes every topic)"
        )


def _write_scram_record(root: Path, credentials: Credentials) -> None:
    record = {"mechanism": SCRAM_MECHANISM, "broker": _broker_fingerprint(credentials),
              "users": [credentials.kafka_username, credentials.kafka_broker_username]}
    (root / _SCRAM_RECORD).write_text(json.dumps(record) + "\n")


def new_cluster_id() -> str:
    """A cluster id as ``StorageTool random-uuid`` prints it: 16 random bytes, base64url.

    Like Kafka's ``Uuid.randomUuid``, never one that starts with ``-``: the storage
    tool's command line would read it as an option (one id in 64 did).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _cluster_id(root: Path) -> str:
    path = root / "cluster.id"
    if path.is_file() and not (kept := path.read_text().strip()).startswith("-"):
        return kept
    cluster_id = new_cluster_id()
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def _java_command(
    dist: KafkaDist, main_class: str, *args: str, heap: str | None = None
) -> list[str]:
    argv = [dist.java]
    if heap is not None:
        argv += [f"-Xms{heap}", f"-Xmx{heap}", *JVM_FLAGS]
    argv += [f"-Dlog4j2.configurationFile={dist.log4j_config}", "-cp", dist.classpath, main_class]
    return argv + list(args)


def format_storage(
    dist: KafkaDist, nodes: Sequence[KafkaNode], deadline: Deadline, credentials: Credentials
) -> None:
    """Write every node's ``server.properties``; format the storage of those never formatted,
    with ``credentials``' SCRAM users.

    A node formatted before keeps its data. Formatting a node of a cluster whose
    other nodes hold data would split the cluster, so that is refused; so is storage
    formatted without SCRAM users (before Parley's brokers authenticated).
    """
    if not nodes:
        return
    root = nodes[0].data_dir.parent
    for node in nodes:
        _write_properties(node.properties_path, broker_properties(node, nodes, credentials))
    fresh = [node for node in nodes if not node.formatted]
    if not fresh:
        _check_scram_record(root, credentials)
        return
    if len(fresh) != len(nodes):
        kept = ", ".join(n.name for n in nodes if n.formatted)
        raise InfraError(
            f"Kafka nodes {', '.join(n.name for n in fresh)} have no data but {kept} do; "
            f"a cluster must be formatted whole: remove {root} to start over (this deletes "
            "every topic)"
        )
    cluster_id = _cluster_id(root)

    def run(node: KafkaNode) -> subprocess.CompletedProcess[str]:
        # The passwords are on this short-lived command line (the storage tool reads them
        # nowhere else); the long-running broker gets them from its 0600 properties file.
        argv = _java_command(dist, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                             "-c", str(node.properties_path), "--ignore-formatted",
                             "--add-scram", _scram_user(credentials.kafka_username,
                                                        credentials.kafka_password),
                             "--add-scram", _scram_user(credentials.kafka_broker_username,
                                                        credentials.kafka_broker_password))
        return subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=max(1.0, deadline.remaining()))

    try:
        with ThreadPoolExecutor(len(fresh)) as pool:
            results = list(pool.map(run, fresh))
    except subprocess.TimeoutExpired as exc:
        raise InfraError("formatting Kafka's storage did not finish in time") from exc
    for node, done in zip(fresh, results, strict=True):
        if done.returncode != 0:
            raise InfraError(
                f"formatting {node.name}'s storage failed (exit {done.returncode}):\n"
                + (done.stdout + done.stderr).strip()
            )
    _write_scram_record(root, credentials)
    logger.info("infra.kafka.formatted nodes=%s cluster_id=%s users=%s", len(fresh), cluster_id,
                [credentials.kafka_username, credentials.kafka_broker_username])


def _scram_user(username: str, password: str) -> str:
    return f"{SCRAM_MECHANISM}=[name={username},password={password}]"


def node_process(dist: KafkaDist, node: KafkaNode, log_path: Path) -> ServiceProcess:
    argv = _java_command(dist, "kafka.Kafka", str(node.properties_path), heap=HEAP)
    # infra/kafka/log4j2.yaml sends every log line to stdout, which ServiceProcess
    # writes to log_path.
    return ServiceProcess(node.name, argv, log_path, node.port)


def admin_client(bootstrap: str, credentials: KafkaCredentials | None = None) -> AdminClient:
    """An AdminClient whose librdkafka log lines go to Python logging, not stderr,
    authenticating as ``credentials`` (None: as this process does, see streams/security.py)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **sasl_config(credentials or process_kafka_credentials()),
        "logger": logging.getLogger("infra.librdkafka"),
        # Retry a refused connection quickly instead of backing off for seconds.
        "reconnect.backoff.max.ms": 500,
    }
    return AdminClient(config)


def kafka_metadata_ok(bootstrap: str, timeout: float = 2.0, brokers: int = 1,
                      credentials: KafkaCredentials | None = None) -> bool:
    """True if a metadata request to ``bootstrap`` lists at least ``brokers`` brokers
    and a controller within ``timeout``."""
    try:
        metadata = admin_client(bootstrap, credentials).list_topics(timeout=timeout)
    except KafkaException as exc:
        logger.debug("metadata request to %s failed: %s", bootstrap, exc)
        return False
    return len(metadata.brokers) >= brokers and metadata.controller_id >= 0


def wait_brokers(
    processes: Sequence[ServiceProcess], host: str, deadline: Deadline,
    credentials: KafkaCredentials | None = None,
) -> None:
    """Block until every node listens and the cluster's metadata lists all of them."""
    for process in processes:
        wait_until(
            lambda p=process: port_accepts(host, p.port),  # type: ignore[misc]
            deadline,
            f"{process.name} to listen on {host}:{process.port}",
            check=process.check_running,
        )

    def all_alive() -> None:
        for process in processes:
            process.check_running()

    bootstrap = ",".join(f"{host}:{p.port}" for p in processes)
    wait_until(
        lambda: kafka_metadata_ok(
            bootstrap, timeout=max(0.1, min(2.0, deadline.remaining())), brokers=len(processes),
            credentials=credentials,
        ),
        deadline,
        f"Kafka metadata listing {len(processes)} broker(s) from {bootstrap}",
        check=all_alive,
    )
