"""A loopback Redis Cluster of Valkey nodes: 3 primaries + 3 replicas by default.

Nodes persist to an append-only file (fsync once a second) beside their
``nodes.conf``, so a restarted cluster comes back with its keys and its slot
layout, without being created again. ``cluster.json`` in the cluster's folder
records the ports it was created on; started on other ports, the folder is
wiped and a new cluster created, so a stale ``nodes.conf`` never makes a node
look for peers that are not there.

Every node refuses clients that do not authenticate: its ACL disables the
``default`` user and knows one user, Parley's, with every right (the
credentials: kernel/credentials.py). Replicas authenticate to their primary as
that user (``masteruser``/``masterauth``), and ``valkey-cli --cluster create``
too. The password is in no command line: each node reads it from ``auth.conf``
(mode 0600) in its folder, written at every start, and valkey-cli from its
environment (``REDISCLI_AUTH``). The cluster bus (node to node gossip) has no
authentication in Redis or Valkey; it listens on loopback only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from infra.ports import port_accepts
from infra.process import ServiceProcess, log_tail
from infra.waiting import Deadline, wait_until
from kernel.errors import InfraError
from streams.security import RedisCredentials, process_redis_credentials

__all__ = [
    "BUS_PORT_OFFSET",
    "CLUSTER_SLOTS",
    "cluster_info",
    "create_cluster",
    "node_auth_config",
    "node_process",
    "node_role",
    "prepare_cluster_dir",
    "slot_map_ports",
    "wait_cluster_ok",
    "wait_nodes_listening",
]

logger = logging.getLogger(__name__)

CLUSTER_SLOTS = 16384
NODE_TIMEOUT_MS = 5000
#: Redis convention: a node's cluster bus listens on its port + 10000.
BUS_PORT_OFFSET = 10000


_CLUSTER_RECORD = "cluster.json"


def prepare_cluster_dir(data_dir: Path, ports: Sequence[int]) -> bool:
    """True if ``data_dir`` holds a cluster created on ``ports`` (start it as it is);
    otherwise empty the folder, record ``ports`` for the cluster about to be created,
    and return False."""
    record = data_dir / _CLUSTER_RECORD
    try:
        created_on = json.loads(record.read_text())["ports"]
    except (OSError, ValueError, KeyError, TypeError):
        created_on = None
    configs = [data_dir / str(port) / f"nodes-{port}.conf" for port in ports]
    if created_on == list(ports) and all(path.is_file() for path in configs):
        return True
    if created_on is not None:
        logger.warning("infra.redis.new_cluster dir=%s was_ports=%s ports=%s (old data removed)",
                       data_dir, created_on, list(ports))
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    record.write_text(json.dumps({"ports": list(ports)}) + "\n")
    return False


def node_auth_config(credentials: RedisCredentials) -> str:
    """The lines of a node's ``auth.conf``: the ACL (``default`` off, Parley's user with
    every key, channel and command; its password stored as a SHA-256) and what a
    replica authenticates to its primary with.

    ``default`` is switched off (no connection can be it, or authenticate as it) and has
    no password, but keeps its rights: Valkey replays the append-only file's MULTI/EXEC
    blocks with the ``default`` user's rights, and a ``default`` without commands made
    it drop every transaction at a restart (NOPERM in the node's log: keys lost).
    """
    digest = hashlib.sha256(credentials.password.encode()).hexdigest()
    return "\n".join([
        "# Written by Parley (infra/redis_cluster.py) at every start; edits are overwritten.",
        "user default off resetpass ~* &* +@all",
        f"user {credentials.username} on #{digest} ~* &* +@all",
        f"masteruser {credentials.username}",
        f"masterauth {credentials.password}",
    ]) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def node_process(
    server: str, host: str, port: int, bus_port: int, data_dir: Path, log_path: Path,
    credentials: RedisCredentials,
) -> ServiceProcess:
    """A cluster-enabled node persisting to an append-only file in ``data_dir/<port>``,
    refusing clients that are not ``credentials``' user."""
    # Absolute: the node changes into --dir before it opens --cluster-config-file, so a
    # relative path (the default data dir is ".parley") would be resolved from inside it.
    node_dir = (data_dir / str(port)).absolute()
    node_dir.mkdir(parents=True, exist_ok=True)
    auth_conf = node_dir / "auth.conf"
    _write_private(auth_conf, node_auth_config(credentials))
    argv = [
        server,
        str(auth_conf),  # a config file comes first; the options after it add to it
        "--port", str(port),
        "--bind", host,
        "--dir", str(node_dir),
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(node_dir / f"nodes-{port}.conf"),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--daemonize", "no",
        "--logfile", "",
        # Replicas sync at once instead of the primary waiting 5 s for more of them.
        "--repl-diskless-sync-delay", "0",
        # A replica shows in CLUSTER SLOTS (what clients discover) only once its
        # replication offset moves; on an idle primary only these pings move it.
        "--repl-ping-replica-period", "1",
        # Nodes gossip with every peer at least every timeout/2: 5 s (default 15 s)
        # spreads those offsets within ~2.5 s. A node silent for 5 s is failed over.
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    ]  # fmt: skip
    if bus_port != port + BUS_PORT_OFFSET:
        argv += ["--cluster-port", str(bus_port)]  # Redis/Valkey 7.0+
    return ServiceProcess(f"redis-{port}", argv, log_path, port)


def wait_nodes_listening(
    nodes: Sequence[ServiceProcess],
    host: str,
    deadline: Deadline,
    running: Sequence[ServiceProcess] = (),
) -> None:
    """Until every node listens; raises as soon as one of them, or of ``running`` (the
    processes started beside them), has exited."""
    watched = [*nodes, *running]

    def check() -> None:
        for process in watched:
            process.check_running()

    for node in nodes:
        wait_until(
            lambda node=node: port_accepts(host, node.port),  # type: ignore[misc]
            deadline,
            f"{node.name} to listen on {host}:{node.port}",
            check=check,
        )


def create_cluster(
    cli: str, host: str, ports: Sequence[int], replicas: int, log_path: Path, deadline: Deadline,
    credentials: RedisCredentials,
) -> None:
    """``valkey-cli --cluster create ... --cluster-yes`` as ``credentials``' user; its output
    goes to ``log_path``."""
    argv = [cli, "--user", credentials.username, "--no-auth-warning"]
    argv += ["--cluster", "create", *(f"{host}:{p}" for p in ports)]
    argv += ["--cluster-replicas", str(replicas), "--cluster-yes"]
    logger.debug("creating the cluster: %s", " ".join(argv))
    with log_path.open("wb") as log:
        try:
            result = subprocess.run(
                argv,
                env={**os.environ, "REDISCLI_AUTH": credentials.password},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline.remaining()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InfraError(
                f"`{cli} --cluster create` did not finish in time; last lines of {log_path}:\n"
                + log_tail(log_path)
            ) from exc
    if result.returncode != 0:
        raise InfraError(
            f"`{cli} --cluster create` failed with code {result.returncode}; "
            f"last lines of {log_path}:\n{log_tail(log_path)}"
        )


def _client(
    host: str, port: int, timeout: float, credentials: RedisCredentials | None
) -> redis.Redis:
    """A client of one node, as ``credentials`` (None: as this process, streams/security.py)."""
    credentials = credentials or process_redis_credentials()
    return redis.Redis(
        host=host,
        port=port,
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def _parse_info(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def cluster_info(host: str, port: int, timeout: float = 1.0,
                 credentials: RedisCredentials | None = None) -> dict[str, str] | None:
    """``CLUSTER INFO`` of one node as a dict, or None if the node does not answer."""
    client = _client(host, port, timeout, credentials)
    try:
        return _parse_info(client.execute_command("CLUSTER", "INFO"))
    except redis.RedisError:
        return None
    finally:
        client.close()


def node_role(host: str, port: int, timeout: float = 1.0,
              credentials: RedisCredentials | None = None) -> str | None:
    """The node's role ("master" or "slave"), or None if the node does not answer."""
    client = _client(host, port, timeout, credentials)
    try:
        reply = client.execute_command("ROLE")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return str(reply[0]) if reply else None


def slot_map_ports(host: str, port: int, timeout: float = 1.0,
                   credentials: RedisCredentials | None = None) -> set[int] | None:
    """Ports of every node ``CLUSTER SLOTS`` on one node lists, or None if it does not answer.

    A replica appears there only once it has synced with its primary, so this is
    what a cluster client sees when it discovers the topology.
    """
    client = _client(host, port, timeout, credentials)
    try:
        reply = client.execute_command("CLUSTER", "SLOTS")
    except redis.RedisError:
        return None
    finally:
        client.close()
    ports: set[int] = set()
    for entry in reply or []:  # [start, end, [host, port, id, ...], replica, ...]
        for node in entry[2:]:
            ports.add(int(node[1]))
    return ports


def _cluster_ok(host: str, port: int, ports: set[int],
                credentials: RedisCredentials | None) -> bool:
    info = cluster_info(host, port, credentials=credentials)
    return (
        info is not None
        and info.get("cluster_state") == "ok"
        and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        and info.get("cluster_known_nodes") == str(len(ports))
        and slot_map_ports(host, port, credentials=credentials) == ports
    )


def wait_cluster_ok(nodes: Sequence[ServiceProcess], host: str, deadline: Deadline,
                    credentials: RedisCredentials | None = None) -> None:
    """Until every node reports cluster_state:ok with all slots served, knows every node,
    and lists every replica as synced in its slot map."""
    ports = {node.port for node in nodes}

    def check() -> None:
        for node in nodes:
            node.check_running()

    for node in nodes:
        wait_until(
            lambda node=node: _cluster_ok(host, node.port, ports,  # type: ignore[misc]
                                          credentials),
            deadline,
            f"cluster_state:ok, {CLUSTER_SLOTS} slots and synced replicas on {host}:{node.port}",
            check=check,
        )
