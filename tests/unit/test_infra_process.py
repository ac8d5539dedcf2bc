"""Child processes: a death during start-up is reported with its log; stops escalate."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from infra import EmbeddedInfra
from infra.binaries import RedisBinaries
from infra.kafka_dist import KafkaDist
from infra.pidfile import read_pidfile
from infra.ports import find_free_ports
from infra.process import ServiceProcess, log_tail, stop_processes
from kernel.errors import InfraError


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, lines=3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == ""


def test_a_process_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    service = ServiceProcess(
        "fake",
        ["sh", "-c", "echo starting; echo 'fatal: bad flag' >&2; exit 3"],
        tmp_path / "fake.log",
        0,
    )
    service.start()
    deadline = time.monotonic() + 5
    while service.returncode() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(InfraError) as caught:
        service.check_running()
    message = str(caught.value)
    assert "code 3" in message and "fatal: bad flag" in message and "starting" in message


def test_stop_escalates_to_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    service = ServiceProcess(
        "stubborn",
        ["sh", "-c", "trap '' TERM; echo ready; exec sleep 30"],
        tmp_path / "stubborn.log",
        0,
    )
    service.start()
    deadline = time.monotonic() + 5
    while "ready" not in log_tail(service.log_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    stop_processes([service], grace=0.3)
    assert service.returncode() == -9
    assert time.monotonic() - began < 3
    service.stop(grace=0.3)  # again: nothing to do


def test_start_stops_everything_when_the_broker_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = _script(tmp_path / "java", "echo 'kafka: error: cannot bind' >&2; exit 2")
    node = _script(tmp_path / "valkey-server", "exec sleep 60")
    cli = _script(tmp_path / "valkey-cli", "exit 1")
    monkeypatch.setattr("infra.embedded.resolve_kafka", lambda: KafkaDist(java, tmp_path))
    monkeypatch.setattr("infra.embedded.format_storage", lambda *args: None)
    monkeypatch.setattr("infra.embedded.resolve_redis_binaries", lambda: RedisBinaries(node, cli))
    ports = find_free_ports(14)
    data_dir = tmp_path / "data"
    stack = EmbeddedInfra(
        data_dir,
        kafka_ports=ports[0:1],
        controller_ports=ports[1:2],
        redis_ports=ports[2:8],
        redis_bus_ports=ports[8:],
        grace=2,
    )
    with pytest.raises(InfraError, match="kafka-1 exited with code 2") as caught:
        stack.start(timeout=10)
    assert "cannot bind" in str(caught.value)
    assert str(data_dir / "logs" / "kafka-1.log") in str(caught.value)
    assert not stack.started
    assert read_pidfile(data_dir) is None


def test_a_process_gets_the_environment_it_is_given_on_top_of_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_TEST_INHERITED", "ours")
    service = ServiceProcess(
        "env", ["sh", "-c", 'echo "$PARLEY_TEST_INHERITED $PARLEY_TEST_GIVEN"'],
        tmp_path / "env.log", 0, {"PARLEY_TEST_GIVEN": "given"},
    )  # fmt: skip
    service.start()
    deadline = time.monotonic() + 10
    while service.returncode() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # let it finish: a stop could end it before it writes
    assert service.returncode() == 0
    assert log_tail(tmp_path / "env.log") == "ours given"
