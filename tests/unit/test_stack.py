"""Stack: where it starts its processes and how it finds them again."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

import pytest

from infra.ports import find_free_ports
from kernel.errors import PortInUseError
from kernel.settings import Settings
from parley.stack import ChildProcess, Stack


def test_a_gateway_on_port_0_listens_on_a_free_port_its_readiness_url_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(Settings.from_env({}, gateway_port=0, gateway_api_port=0, data_dir=tmp_path))
    spawned: list[list[str]] = []

    def spawn(name: str, args: list[str], ready_url: str, env: dict[str, str]) -> ChildProcess:
        spawned.append(args)
        popen: Any = None  # nothing is started
        return ChildProcess(name, popen, ready_url, tmp_path / f"{name}.log")

    monkeypatch.setattr(stack, "spawn", spawn)
    gateway = stack.start_gateway()
    (args,) = spawned
    port = int(args[args.index("--port") + 1])
    api_port = int(args[args.index("--api-port") + 1])
    assert port != 0 and api_port not in (0, port)
    assert gateway.ready_url == f"http://127.0.0.1:{port}/readyz"
    assert gateway.url == f"http://127.0.0.1:{port}/"


def test_a_gateway_or_worker_port_already_taken_is_an_error_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second `parley up` must not mistake the first one's gateway for its own."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(Settings.from_env({}, gateway_port=port, worker_web_port=port,
                                        data_dir=tmp_path))
        stack.model_dir = tmp_path  # no model to prepare
        monkeypatch.setattr(stack, "prepare_knowledge", lambda: None)
        monkeypatch.setattr(stack, "spawn", lambda *a, **k: pytest.fail("spawned"))
        with pytest.raises(PortInUseError, match=f"port {port} needed by gateway-{port} "
                                                  r"\(PARLEY_GATEWAY_PORT\)"):
            stack.start_gateway()
        with pytest.raises(PortInUseError, match=r"\(PARLEY_WORKER_WEB_PORT\)"):
            stack.start_worker()


def test_the_first_gateway_gets_the_api_port_setting_and_the_others_free_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = find_free_ports(1)[0]
    stack = Stack(Settings.from_env({}, gateway_api_port=setting, data_dir=tmp_path))
    spawned: list[list[str]] = []

    def spawn(name: str, args: list[str], ready_url: str, env: dict[str, str]) -> ChildProcess:
        spawned.append(args)
        child = ChildProcess(name, cast(Any, None), ready_url, tmp_path / f"{name}.log")
        stack.children.append(child)
        return child

    monkeypatch.setattr(stack, "spawn", spawn)
    monkeypatch.setattr("parley.stack.check_ports_free", lambda host, ports: None)
    stack.start_gateway()
    stack.start_gateway(find_free_ports(1)[0])
    first, second = (int(args[args.index("--api-port") + 1]) for args in spawned)
    assert first == setting and second not in (0, setting)
