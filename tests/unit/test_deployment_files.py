"""docker-compose.yml cannot run here (no Docker engine); these checks keep it honest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from kernel.settings import Settings
from parley.cli import main

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_runs_the_whole_design() -> None:
    services = compose()["services"]
    wanted = {"gateway", "worker", "topics", "redis-cluster", "prometheus", "grafana"}
    assert wanted <= set(services)
    assert len([s for s in services if s.startswith("kafka-")]) == 3
    assert len([s for s in services if s.startswith("redis-") and s[-1].isdigit()]) == 6


def test_every_parley_command_in_compose_exists() -> None:
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["parley"]:
            result = CliRunner().invoke(main, [*command[1:], "--help"])
            assert result.exit_code == 0, f"{name}: {' '.join(command)}: {result.output}"


def test_every_parley_variable_in_compose_is_a_setting() -> None:
    known = {env for env, _, _ in Settings.describe()}
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}) or {}:
            if variable.startswith("PARLEY_"):
                assert variable in known, f"{name}: {variable} is not a Parley setting"


def test_the_image_carries_every_package_its_roles_import() -> None:
    """The Dockerfile copies each package a gateway or worker imports (the benchmarks stay
    out), and the demo bot's data a worker serves by default."""
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and len(line.split()) == 3}
    wanted = {"kernel", "schemas", "streams", "gateway", "agents", "infra", "parley", "examples"}
    assert wanted <= copied
    assert "benchmarks" not in copied
