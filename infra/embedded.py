"""The embedded stack: Apache Kafka (KRaft, 1 or 3 nodes) and a 6-node Valkey cluster.

Everything runs on loopback and keeps its data on disk under ``data_dir``: a
restarted stack has every topic, committed offset and key it had. Everything
authenticates: the credentials are generated into ``data_dir/credentials.json``
the first time (kernel/credentials.py), and :attr:`EmbeddedInfra.credentials`
gives them to clients (``settings.replace(**infra.client_settings())``). Kafka's jars
come from Maven Central (:mod:`infra.kafka_dist`); Valkey from a wheel.

::

    with EmbeddedInfra(Path(".parley"), kafka_port=19092, redis_ports=range(17000, 17006)) as infra:
        ensure_topics(infra.kafka_bootstrap, all_topics(brokers=infra.brokers))
        ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from infra.binaries import resolve_redis_binaries
from infra.broker import (
    KafkaNode,
    format_storage,
    kafka_metadata_ok,
    kafka_nodes,
    wait_brokers,
)
from infra.broker import (
    node_process as kafka_node_process,
)
from infra.kafka_dist import resolve_kafka
from infra.pidfile import PidFile, PidRecord, read_pidfile, remove_pidfile, write_pidfile
from infra.ports import check_ports_free, port_accepts
from infra.process import DEFAULT_GRACE, ServiceProcess, stop_processes
from infra.redis_cluster import (
    BUS_PORT_OFFSET,
    cluster_info,
    create_cluster,
    node_process,
    node_role,
    prepare_cluster_dir,
    wait_cluster_ok,
    wait_nodes_listening,
)
from infra.topics import ensure_topics
from infra.waiting import Deadline
from kernel.credentials import Credentials, ensure_credentials, read_credentials
from kernel.errors import InfraError
from streams.security import KafkaCredentials, RedisCredentials

__all__ = ["CLUSTER_NODES", "EmbeddedInfra", "ensure_topics"]

logger = logging.getLogger(__name__)

CLUSTER_NODES = 6
"""Redis nodes of the embedded cluster (3 primaries, 1 replica each), on consecutive ports."""


def _check_port(value: int, what: str) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{what} must be a TCP port between 1 and 65535, got {value}")


def _overall_cluster_state(states: list[str | None]) -> str:
    """ok: every node says ok; down: none answers; degraded: some do not answer, the
    rest say ok; otherwise fail (a node reports its cluster as failing)."""
    answered = [state for state in states if state is not None]
    if not answered:
        return "down"
    if any(state != "ok" for state in answered):
        return "fail"
    return "ok" if len(answered) == len(states) else "degraded"


class EmbeddedInfra:
    """Starts, checks and stops the embedded Kafka nodes and Redis Cluster.

    ``brokers`` Kafka nodes listen on ``kafka_ports`` (clients) and
    ``controller_ports`` (the KRaft quorum); by default node *i* (from 0) takes
    ``kafka_port + 2i`` and the port after it. ``start()`` blocks until the
    cluster's metadata lists every broker and every Redis node reports
    ``cluster_state:ok`` with all 16384 slots served.
    ``stop()`` stops what this object started and is idempotent. A stack left
    running by ``parley infra up`` (recorded in ``<data_dir>/pids.json``) is
    stopped with :meth:`stop_recorded`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        kafka_port: int = 9092,
        brokers: int = 1,
        kafka_ports: Sequence[int] | None = None,
        controller_ports: Sequence[int] | None = None,
        redis_ports: Sequence[int] = range(7000, 7006),
        redis_bus_ports: Sequence[int] | None = None,
        redis_replicas: int = 1,
        grace: float = DEFAULT_GRACE,
        credentials: Credentials | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._credentials = credentials
        self.host = host
        if brokers < 1:
            raise ValueError(f"brokers must be 1 or more, got {brokers}")
        self.kafka_ports = (
            [kafka_port + 2 * i for i in range(brokers)] if kafka_ports is None
            else list(kafka_ports)
        )
        self.controller_ports = (
            [port + 1 for port in self.kafka_ports] if controller_ports is None
            else list(controller_ports)
        )
        if len(self.kafka_ports) != brokers or len(self.controller_ports) != brokers:
            raise ValueError(f"{brokers} broker(s) need {brokers} kafka port(s) and as many "
                             "controller ports")
        self.redis_ports = list(redis_ports)
        self.redis_bus_ports = (
            [p + BUS_PORT_OFFSET for p in self.redis_ports]
            if redis_bus_ports is None
            else list(redis_bus_ports)
        )
        self.redis_replicas = redis_replicas
        self.grace = grace
        self._validate()
        self._services: list[ServiceProcess] = []

    def _validate(self) -> None:
        for port in self.kafka_ports:
            _check_port(port, "every kafka port")
        for port in self.controller_ports:
            _check_port(port, "every kafka controller port")
        for port in self.redis_ports:
            _check_port(port, "every redis port")
        for port in self.redis_bus_ports:
            _check_port(port, "every redis cluster bus port (by default redis port + 10000)")
        if self.redis_replicas < 0:
            raise ValueError(f"redis_replicas must be 0 or more, got {self.redis_replicas}")
        need = 3 * (self.redis_replicas + 1)
        if len(self.redis_ports) < need:
            raise ValueError(
                f"a Redis Cluster with {self.redis_replicas} replica(s) per primary needs at "
                f"least {need} ports (3 primaries), got {len(self.redis_ports)}"
            )
        if len(self.redis_bus_ports) != len(self.redis_ports):
            raise ValueError("redis_bus_ports needs exactly one port per redis port")
        every = [*self.kafka_ports, *self.controller_ports, *self.redis_ports,
                 *self.redis_bus_ports]
        if len(set(every)) != len(every):
            raise ValueError(f"kafka, kafka controller, redis and redis bus ports must all "
                             f"differ, got {every}")

    # --- credentials ------------------------------------------------------------
    @property
    def credentials(self) -> Credentials:
        """Who clients and brokers authenticate as: given, or ``data_dir``'s (generated
        and written there, mode 0600, the first time)."""
        if self._credentials is None:
            self._credentials = ensure_credentials(self.data_dir)
        return self._credentials

    @property
    def kafka_credentials(self) -> KafkaCredentials:
        c = self.credentials
        return KafkaCredentials(c.kafka_username, c.kafka_password)

    @property
    def redis_credentials(self) -> RedisCredentials:
        c = self.credentials
        return RedisCredentials(c.redis_username, c.redis_password)

    def client_settings(self) -> dict[str, str]:
        """The :class:`~kernel.settings.Settings` fields a client of this stack needs:
        addresses and credentials (``settings.replace(**infra.client_settings())``)."""
        c = self.credentials
        return {"kafka_bootstrap": self.kafka_bootstrap, "redis_nodes": self.redis_nodes,
                "kafka_username": c.kafka_username, "kafka_password": c.kafka_password,
                "redis_username": c.redis_username, "redis_password": c.redis_password}

    # --- addresses --------------------------------------------------------------
    @property
    def brokers(self) -> int:
        return len(self.kafka_ports)

    @property
    def kafka_port(self) -> int:
        """The first broker's client port."""
        return self.kafka_ports[0]

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"{self.host}:{port}" for port in self.kafka_ports)

    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        return kafka_nodes(self.data_dir, self.host, self.kafka_ports, self.controller_ports)

    @property
    def redis_nodes(self) -> str:
        return ",".join(f"{self.host}:{port}" for port in self.redis_ports)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def started(self) -> bool:
        return bool(self._services)

    @property
    def services(self) -> list[ServiceProcess]:
        """The processes this object started (empty before start and after stop)."""
        return list(self._services)

    def _wanted_ports(self) -> list[tuple[str, int]]:
        wanted = []
        for node in self.kafka_nodes:
            wanted += [(node.name, node.port), (f"{node.name}'s controller", node.controller_port)]
        wanted += [(f"redis node {p}", p) for p in self.redis_ports]
        wanted += [
            (f"the cluster bus of redis node {p}", bus)
            for p, bus in zip(self.redis_ports, self.redis_bus_ports, strict=True)
        ]
        return wanted

    # --- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        """Start everything and block until it is ready (at most ``timeout`` seconds).

        Raises :class:`~kernel.errors.BinaryNotFoundError` (no Java, no Maven),
        :class:`~kernel.errors.InfraError` (Java too old, Maven Central unreachable)
        or :class:`~kernel.errors.PortInUseError` before starting anything, and
        :class:`~kernel.errors.InfraError` (with the end of the process's log) if a
        process dies or is not ready in time; then whatever was started is stopped.
        """
        if self._services:
            raise InfraError("this EmbeddedInfra is already started")
        began = time.monotonic()
        deadline = Deadline(timeout)
        kafka = resolve_kafka()
        redis_bins = resolve_redis_binaries()
        check_ports_free(self.host, self._wanted_ports())
        self._refuse_live_pidfile()

        self.log_dir.mkdir(parents=True, exist_ok=True)
        credentials = self.credentials
        kafka_nodes = self.kafka_nodes
        format_storage(kafka, kafka_nodes, deadline, credentials)
        brokers = [
            kafka_node_process(kafka, node, self.log_dir / f"{node.name}.log")
            for node in kafka_nodes
        ]
        redis_dir = self.data_dir / "redis"
        cluster_exists = prepare_cluster_dir(redis_dir, self.redis_ports)
        nodes = [
            node_process(
                redis_bins.server,
                self.host,
                port,
                bus,
                redis_dir,
                self.log_dir / f"redis-{port}.log",
                self.redis_credentials,
            )
            for port, bus in zip(self.redis_ports, self.redis_bus_ports, strict=True)
        ]
        self._services = [*brokers, *nodes]
        try:
            for service in self._services:
                service.start()
            self._write_pidfile()
            # Kafka's JVMs start while the Redis cluster forms; a dead node of either
            # ends the wait at once, with its log.
            wait_nodes_listening(nodes, self.host, deadline, running=brokers)
            if not cluster_exists:
                create_cluster(
                    redis_bins.cli,
                    self.host,
                    self.redis_ports,
                    self.redis_replicas,
                    self.log_dir / "redis-cluster-create.log",
                    deadline,
                    self.redis_credentials,
                )
            wait_brokers(brokers, self.host, deadline, self.kafka_credentials)
            logger.info("infra.kafka.ready bootstrap=%s brokers=%s", self.kafka_bootstrap,
                        len(brokers))
            wait_cluster_ok(nodes, self.host, deadline, self.redis_credentials)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "infra.ready redis_nodes=%s seconds=%.1f",
            self.redis_nodes,
            time.monotonic() - began,
        )

    def stop(self) -> None:
        """Stop what :meth:`start` started: SIGTERM, grace period, SIGKILL. Idempotent."""
        if not self._services:
            return
        services, self._services = self._services, []
        logger.info("infra.stopping processes=%s", len(services))
        stop_processes(services, self.grace)
        recorded = self._read_pidfile_quietly()
        own = {s.pid for s in services}
        if recorded is not None and {r.pid for r in recorded.processes} <= own:
            remove_pidfile(self.data_dir)

    def stop_recorded(self) -> list[str]:
        """Stop the processes ``<data_dir>/pids.json`` records (a detached ``parley infra up``).

        Returns the names of the processes that were still running. Idempotent.
        """
        self.stop()
        recorded = read_pidfile(self.data_dir)
        if recorded is None:
            return []
        live = recorded.live()
        stop_processes([proc for _, proc in live], self.grace)
        remove_pidfile(self.data_dir)
        return [record.name for record, _ in live]

    def __enter__(self) -> EmbeddedInfra:
        if not self._services:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- pid file ---------------------------------------------------------------
    def _write_pidfile(self) -> None:
        records = []
        for service in self._services:
            proc = service.process
            if proc is not None:
                records.append(PidRecord(service.name, proc.pid, service.port, proc.create_time()))
        write_pidfile(
            self.data_dir,
            PidFile(self.host, self.kafka_ports, self.redis_ports, records,
                    controller_ports=self.controller_ports),
        )

    def _read_pidfile_quietly(self) -> PidFile | None:
        try:
            return read_pidfile(self.data_dir)
        except InfraError:
            return None

    def _refuse_live_pidfile(self) -> None:
        recorded = self._read_pidfile_quietly()
        if recorded is None:
            return
        live = recorded.live()
        if live:
            pids = ", ".join(f"{record.name}={record.pid}" for record, _ in live)
            raise InfraError(
                f"{self.data_dir} belongs to infrastructure that is still running ({pids}); "
                f"stop it first with `parley infra --data-dir {self.data_dir} down`"
            )
        remove_pidfile(self.data_dir)  # stale: nothing it names runs any more

    @classmethod
    def from_pidfile(cls, data_dir: Path, **kwargs: Any) -> EmbeddedInfra | None:
        """An EmbeddedInfra with the ports recorded in ``data_dir``, or None without a pid file."""
        recorded = read_pidfile(Path(data_dir))
        if recorded is None:
            return None
        return cls(
            Path(data_dir),
            host=recorded.host,
            brokers=len(recorded.kafka_ports),
            kafka_ports=recorded.kafka_ports,
            controller_ports=recorded.controller_ports,
            redis_ports=recorded.redis_ports,
            **kwargs,
        )

    # --- status -----------------------------------------------------------------
    def _pids(self) -> dict[str, int]:
        if self._services:
            return {s.name: s.pid for s in self._services if s.pid is not None}
        recorded = self._read_pidfile_quietly()
        if recorded is None:
            return {}
        return {record.name: record.pid for record, _ in recorded.live()}

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        """What answers on the configured ports, per service.

        ``{"up": bool, "data_dir": str, "kafka": [{name, port, pid, up}, ...],
        "redis": {"cluster_state": str, "nodes": [{name, port, pid, up, role,
        cluster_state}, ...]}}``; ``pid`` is None when not started by this
        object or recorded in the pid file. The overall ``cluster_state`` is
        ok, degraded (some nodes do not answer), fail or down.
        """
        pids = self._pids()
        # Never generates credentials: asking whether a stack runs must not write a file.
        known = self._credentials or read_credentials(self.data_dir)
        kafka_credentials = (KafkaCredentials(known.kafka_username, known.kafka_password)
                             if known else None)
        redis_credentials = (RedisCredentials(known.redis_username, known.redis_password)
                             if known else None)
        kafka = [
            {
                "name": node.name,
                "port": node.port,
                "pid": pids.get(node.name),
                "up": port_accepts(self.host, node.port)
                and kafka_metadata_ok(f"{self.host}:{node.port}", timeout,
                                      credentials=kafka_credentials),
            }
            for node in self.kafka_nodes
        ]
        kafka_up = all(node["up"] for node in kafka)
        nodes: list[dict[str, Any]] = []
        states: list[str | None] = []
        for port in self.redis_ports:
            info = (cluster_info(self.host, port, timeout, redis_credentials)
                    if port_accepts(self.host, port) else None)
            states.append(info.get("cluster_state") if info is not None else None)
            nodes.append(
                {
                    "name": f"redis-{port}",
                    "port": port,
                    "pid": pids.get(f"redis-{port}"),
                    "up": info is not None,
                    "role": node_role(self.host, port, timeout, redis_credentials)
                    if info is not None else None,
                    "cluster_state": states[-1],
                }
            )
        cluster_state = _overall_cluster_state(states)
        return {
            "up": kafka_up and cluster_state == "ok",
            "data_dir": str(self.data_dir),
            "kafka": kafka,
            "redis": {"cluster_state": cluster_state, "nodes": nodes},
        }
