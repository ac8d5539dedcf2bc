"""``parley infra`` against ports where nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.cli import infra
from infra.ports import find_free_ports


@pytest.fixture
def free_args(tmp_path: Path) -> list[str]:
    # Six consecutive ports are not guaranteed free; these are very unlikely to be used.
    (kafka,) = find_free_ports(1)
    return ["--data-dir", str(tmp_path), "--kafka-port", str(kafka), "--redis-port", "1030"]


def test_status_exits_non_zero_when_down(free_args: list[str]) -> None:
    result = CliRunner().invoke(infra, [*free_args, "status"])
    assert result.exit_code == 1
    assert "down" in result.output
    assert "redis cluster: down" in result.output


def test_down_with_nothing_running_is_fine(free_args: list[str]) -> None:
    result = CliRunner().invoke(infra, [*free_args, "down"])
    assert result.exit_code == 0, result.output
    assert "nothing to stop" in result.output


def test_up_reports_a_taken_port(free_args: list[str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        args = ["--data-dir", str(tmp_path), "--kafka-port", str(taken), "up", "--timeout", "5"]
        result = CliRunner().invoke(infra, args)
    assert result.exit_code == 1
    assert f"port {taken}" in result.output


def test_every_infra_module_declares_its_api() -> None:
    import importlib

    for name in (
        "binaries",
        "broker",
        "cli",
        "embedded",
        "pidfile",
        "ports",
        "process",
        "redis_cluster",
        "topics",
        "waiting",
    ):
        module = importlib.import_module(f"infra.{name}")
        for exported in module.__all__:
            assert hasattr(module, exported), f"infra.{name}.__all__ names missing {exported}"
    import infra as package

    assert set(package.__all__) == {"EmbeddedInfra", "ensure_topics"}


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        (["ok"] * 6, "ok"),
        ([None] * 6, "down"),
        (["ok", None, "ok", "ok", "ok", "ok"], "degraded"),
        (["ok", "fail", "ok", "ok", None, "ok"], "fail"),
    ],
)
def test_overall_cluster_state(states: list[str | None], overall: str) -> None:
    from infra.embedded import _overall_cluster_state

    assert _overall_cluster_state(states) == overall
