"""Port probing: a taken port is reported before anything starts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import EmbeddedInfra
from infra.ports import check_ports_free, find_free_ports, is_port_free, port_accepts
from infra.process import ServiceProcess
from kernel.errors import InfraError, PortInUseError


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something listens on for the length of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_listening_port_is_not_free(listener: int) -> None:
    assert not is_port_free("127.0.0.1", listener)
    assert port_accepts("127.0.0.1", listener)


def test_a_released_port_is_free() -> None:
    (port,) = find_free_ports(1)
    assert is_port_free("127.0.0.1", port)
    assert not port_accepts("127.0.0.1", port)


def test_find_free_ports_gives_distinct_ports() -> None:
    ports = find_free_ports(13)
    assert len(set(ports)) == 13


def test_check_ports_free_names_the_service_and_port(listener: int) -> None:
    (free,) = find_free_ports(1)
    with pytest.raises(PortInUseError) as caught:
        check_ports_free("127.0.0.1", [("kafka", free), ("redis node", listener)])
    assert caught.value.port == listener
    assert caught.value.service == "redis node"
    assert str(listener) in str(caught.value)


def _forbid_start(self: ServiceProcess) -> None:
    raise AssertionError(f"{self.name} was started although a port was taken")


def test_start_refuses_a_taken_kafka_port_before_starting_anything(
    listener: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ServiceProcess, "start", _forbid_start)
    ports = find_free_ports(12)
    stack = EmbeddedInfra(
        tmp_path, kafka_port=listener, redis_ports=ports[:6], redis_bus_ports=ports[6:]
    )
    with pytest.raises(PortInUseError) as caught:
        stack.start(timeout=5)
    assert caught.value.port == listener
    assert not stack.started


def test_start_refuses_a_taken_redis_bus_port(
    listener: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ServiceProcess, "start", _forbid_start)
    ports = find_free_ports(12)
    bus_ports = [*ports[6:11], listener]
    stack = EmbeddedInfra(
        tmp_path, kafka_port=ports[11], redis_ports=ports[:6], redis_bus_ports=bus_ports
    )
    with pytest.raises(PortInUseError) as caught:
        stack.start(timeout=5)
    assert caught.value.port == listener
    assert "bus" in caught.value.service


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kafka_port": 0}, "every kafka port"),
        ({"brokers": 3, "kafka_ports": [9092]}, "3 broker(s) need 3 kafka port(s)"),
        ({"redis_ports": range(7000, 7003)}, "at least 6 ports"),
        ({"redis_ports": [7000, 7001, 7002, 7003, 7004, 9092]}, "must all differ"),
        ({"redis_ports": range(60000, 60006)}, "bus port"),
        ({"redis_bus_ports": [1, 2]}, "one port per redis port"),
    ],
)
def test_bad_port_combinations_are_rejected_at_construction(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddedInfra(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_addresses(tmp_path: Path) -> None:
    stack = EmbeddedInfra(tmp_path, kafka_port=19092, redis_ports=range(17000, 17006))
    assert stack.kafka_bootstrap == "127.0.0.1:19092"
    assert stack.redis_nodes == ",".join(f"127.0.0.1:{p}" for p in range(17000, 17006))
    assert stack.redis_bus_ports == list(range(27000, 27006))


def test_stop_before_start_is_a_no_op(tmp_path: Path) -> None:
    stack = EmbeddedInfra(tmp_path)
    stack.stop()
    stack.stop()
    assert not stack.started


def test_a_second_start_on_a_started_object_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = EmbeddedInfra(tmp_path)
    monkeypatch.setattr(stack, "_services", [object()])
    with pytest.raises(InfraError, match="already started"):
        stack.start()
