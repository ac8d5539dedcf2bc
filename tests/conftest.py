"""Shared pytest fixtures: one embedded broker + Redis Cluster per session.

* ``infra`` (session): starts one :class:`~infra.EmbeddedInfra` (one Apache Kafka
  node, a 6-node Redis Cluster) on ports that never collide with a dev stack
  (kafka 19092 + controller 19093, redis 17000-17005). If those are
  taken — another pytest session, or a dev stack's cluster bus, which listens on
  its Redis ports + 10000, i.e. 17000-17005 — it picks free ports instead. With
  ``PARLEY_TEST_KAFKA`` and ``PARLEY_TEST_REDIS_NODES`` set, it starts nothing
  and uses that infrastructure.
* ``settings`` (function): :class:`~kernel.settings.Settings` pointing at it,
  with a unique topic prefix and consumer group per test; the prefix's topics
  are created before the test runs.
* ``redis_cluster`` (function, async): a connected ``RedisCluster`` client.
* ``tenant`` (function, async): a tenant stored in that cluster, with tokens for its
  users (tests/tenants.py): every /ws connection authenticates.

The embedded infrastructure authenticates (docs/infra.md): ``settings`` carries
its credentials, and so does this process's environment
(``PARLEY_KAFKA_USERNAME``/``_PASSWORD``, ``PARLEY_REDIS_USERNAME``/``_PASSWORD``)
for the whole session, as a deployed process's would: clients built from a
bootstrap string alone authenticate from there (streams/security.py). External
infrastructure takes its credentials from those variables, if it needs any.

Every test that uses ``infra`` (directly or through another fixture) gets the
``integration`` marker, so ``pytest -m "not integration"`` runs without it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from uuid import uuid4

import pytest
import pytest_asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster

from infra import EmbeddedInfra, ensure_topics
from infra.ports import find_free_ports
from kernel.errors import PortInUseError
from kernel.settings import Settings
from streams.security import kafka_credentials, redis_credentials
from streams.topics import all_topics
from tests.tenants import AuthTenant, put_tenants, test_tenant_config

logger = logging.getLogger("tests.infra")

TEST_KAFKA_PORT = 19092
TEST_REDIS_PORTS = range(17000, 17006)
_FREE_PORT_ATTEMPTS = 3


class InfraAddresses(Protocol):
    """What tests need to know about the infrastructure they run against."""

    @property
    def kafka_bootstrap(self) -> str: ...

    @property
    def redis_nodes(self) -> str: ...

    def client_settings(self) -> dict[str, str]:
        """Settings fields of a client: addresses and credentials."""
        ...


@dataclass(frozen=True)
class ExternalInfra:
    """Infrastructure started by someone else (``PARLEY_TEST_KAFKA``/``_REDIS_NODES``);
    credentials, if it needs any, from ``PARLEY_KAFKA_USERNAME`` etc."""

    kafka_bootstrap: str
    redis_nodes: str

    def client_settings(self) -> dict[str, str]:
        names = ("kafka_username", "kafka_password", "redis_username", "redis_password")
        given = Settings.from_env(data_dir=Path("/nonexistent"))  # the environment only
        return {"kafka_bootstrap": self.kafka_bootstrap, "redis_nodes": self.redis_nodes,
                **{name: getattr(given, name) for name in names}}


#: The variables that give this process's clients their credentials.
_CREDENTIAL_VARIABLES = {
    "kafka_username": "PARLEY_KAFKA_USERNAME", "kafka_password": "PARLEY_KAFKA_PASSWORD",
    "redis_username": "PARLEY_REDIS_USERNAME", "redis_password": "PARLEY_REDIS_PASSWORD",
}


def _external_infra() -> ExternalInfra | None:
    kafka = os.environ.get("PARLEY_TEST_KAFKA", "").strip()
    redis_nodes = os.environ.get("PARLEY_TEST_REDIS_NODES", "").strip()
    if not kafka and not redis_nodes:
        return None
    if not (kafka and redis_nodes):
        raise pytest.UsageError(
            "set both PARLEY_TEST_KAFKA (host:port) and PARLEY_TEST_REDIS_NODES "
            "(host:port,...) to test against external infrastructure, or neither"
        )
    return ExternalInfra(kafka, redis_nodes)


def _start_embedded(data_dir: Path) -> EmbeddedInfra:
    """Start on the fixed test ports, or on free ports if any of those is taken."""
    stack = EmbeddedInfra(data_dir, kafka_port=TEST_KAFKA_PORT, redis_ports=TEST_REDIS_PORTS)
    try:
        stack.start()
        return stack
    except PortInUseError as exc:
        logger.warning("test infrastructure: %s; using free ports instead", exc)
    for attempt in range(1, _FREE_PORT_ATTEMPTS + 1):
        ports = find_free_ports(2 + 2 * len(TEST_REDIS_PORTS))
        kafka_ports, controller_ports = ports[0:1], ports[1:2]
        redis_ports, bus_ports = ports[2:8], ports[8:14]
        stack = EmbeddedInfra(
            data_dir, kafka_ports=kafka_ports, controller_ports=controller_ports,
            redis_ports=redis_ports, redis_bus_ports=bus_ports,
        )
        try:
            stack.start()
            return stack
        except PortInUseError:
            if attempt == _FREE_PORT_ATTEMPTS:
                raise
            logger.warning("a free port was taken before we bound it; picking again")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfraAddresses]:
    external = _external_infra()
    if external is not None:
        yield external
        return
    began = time.monotonic()
    stack = _start_embedded(tmp_path_factory.mktemp("infra"))
    logger.info(
        "test infrastructure up in %.1fs: kafka %s, redis %s, logs in %s",
        time.monotonic() - began,
        stack.kafka_bootstrap,
        stack.redis_nodes,
        stack.log_dir,
    )
    saved = {name: os.environ.get(name) for name in _CREDENTIAL_VARIABLES.values()}
    given = stack.client_settings()
    os.environ.update({env: given[field] for field, env in _CREDENTIAL_VARIABLES.items()})
    try:
        yield stack
    finally:
        stack.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def settings(infra: InfraAddresses, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix (topics already created) and group."""
    prefix = f"t{uuid4().hex[:8]}."
    test_settings = Settings.from_env(
        {},
        **infra.client_settings(),
        topic_prefix=prefix,
        consumer_group=f"{prefix}workers",
        data_dir=tmp_path,
        gateway_api_port=0,  # a gateway's second port: any free one, like tests' /ws ports
    )
    ensure_topics(
        test_settings.kafka_bootstrap,
        all_topics(test_settings.chat_partitions, test_settings.topic_prefix),
        credentials=kafka_credentials(test_settings),
    )
    return test_settings


@pytest_asyncio.fixture
async def redis_cluster(infra: InfraAddresses) -> AsyncIterator[RedisCluster]:
    """A connected cluster client; on embedded test infra, primaries are flushed afterwards."""
    nodes = []
    for item in infra.redis_nodes.split(","):
        host, _, port = item.strip().rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port)))
    credentials = redis_credentials(Settings.from_env({}, **infra.client_settings()))
    client = RedisCluster(startup_nodes=nodes, decode_responses=True,
                          username=credentials.username if credentials else None,
                          password=credentials.password if credentials else None)
    await client.initialize()
    try:
        yield client
    finally:
        try:
            if isinstance(infra, EmbeddedInfra):  # never wipe external infrastructure
                await client.flushall(target_nodes=RedisCluster.PRIMARIES)
        finally:
            await client.aclose()


@pytest_asyncio.fixture
async def tenant(settings: Settings) -> AuthTenant:
    """Tenant ``t`` in the test's Redis Cluster (every tier and Origin allowed)."""
    config = test_tenant_config("t")
    await put_tenants(settings.redis_nodes, [config])
    return AuthTenant(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "infra" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
