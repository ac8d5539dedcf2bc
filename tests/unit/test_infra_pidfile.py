"""pids.json: round trip, stale and reused pids, and stopping what it records."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from infra import EmbeddedInfra
from infra.pidfile import PidFile, PidRecord, read_pidfile, remove_pidfile, write_pidfile
from infra.process import ServiceProcess
from kernel.errors import InfraError


def _own_record() -> PidRecord:
    me = psutil.Process()
    return PidRecord("pytest", me.pid, 1234, me.create_time())


def test_round_trip(tmp_path: Path) -> None:
    content = PidFile("127.0.0.1", [19092], [17000, 17001], [_own_record()], controller_ports=[19093])
    path = write_pidfile(tmp_path, content)
    assert path == tmp_path / "pids.json"
    assert read_pidfile(tmp_path) == content
    assert [record.name for record, _ in content.live()] == ["pytest"]
    assert not list(tmp_path.glob(".pids.json.*"))  # no temp file left behind


def test_missing_file_reads_as_none_and_removal_is_idempotent(tmp_path: Path) -> None:
    assert read_pidfile(tmp_path) is None
    remove_pidfile(tmp_path)
    remove_pidfile(tmp_path)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "pids.json").write_text("{not json")
    with pytest.raises(InfraError, match=r"pids\.json"):
        read_pidfile(tmp_path)


def test_a_reused_pid_is_not_live() -> None:
    record = _own_record()
    reused = PidRecord(record.name, record.pid, record.port, record.create_time - 100)
    assert record.process() is not None
    assert reused.process() is None


def test_an_exited_pid_is_not_live() -> None:
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert PidRecord("gone", proc.pid, 1, proc.create_time()).process() is None


def _sleeper(tmp_path: Path, name: str) -> ServiceProcess:
    service = ServiceProcess(name, ["sleep", "60"], tmp_path / f"{name}.log", 0)
    service.start()
    return service


def test_stop_recorded_stops_the_recorded_processes_once(tmp_path: Path) -> None:
    services = [_sleeper(tmp_path, "a"), _sleeper(tmp_path, "b")]
    records = [
        PidRecord(s.name, s.pid or 0, 0, psutil.Process(s.pid).create_time()) for s in services
    ]
    write_pidfile(tmp_path, PidFile("127.0.0.1", [1], [2, 3, 4, 5, 6, 7], records))
    stack = EmbeddedInfra.from_pidfile(tmp_path, grace=2)
    assert stack is not None and stack.kafka_port == 1
    try:
        assert sorted(stack.stop_recorded()) == ["a", "b"]
        for service in services:
            service.reap()
            assert service.returncode() is not None
        assert read_pidfile(tmp_path) is None
        assert stack.stop_recorded() == []
    finally:
        for service in services:
            service.stop(grace=0.1)


def test_start_refuses_a_data_dir_whose_processes_still_run(tmp_path: Path) -> None:
    write_pidfile(tmp_path, PidFile("127.0.0.1", [1], [], [_own_record()]))
    from infra.ports import find_free_ports

    ports = find_free_ports(13)
    stack = EmbeddedInfra(
        tmp_path, kafka_port=ports[0], redis_ports=ports[1:7], redis_bus_ports=ports[7:]
    )
    with pytest.raises(InfraError, match=f"still running.*pytest={os.getpid()}"):
        stack.start(timeout=5)
    assert read_pidfile(tmp_path) is not None  # someone else's: left alone


def test_a_data_dir_in_use_names_a_stop_command_that_parses(tmp_path: Path) -> None:
    import shlex

    from click.testing import CliRunner

    from infra.cli import infra

    write_pidfile(tmp_path, PidFile("127.0.0.1", 19092, [17000], [_own_record()]))
    with pytest.raises(InfraError, match="still running") as error:
        EmbeddedInfra(tmp_path)._refuse_live_pidfile()
    command = str(error.value).split("`")[1]
    assert command == f"parley infra --data-dir {tmp_path} down"
    # --help: parse the options as given, but stop nothing (the record is this process).
    result = CliRunner().invoke(infra, [*shlex.split(command)[2:], "--help"])
    assert result.exit_code == 0, result.output
