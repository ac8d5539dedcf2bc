"""Binary resolution: bundled Valkey, then valkey-* on PATH, then redis-* on PATH."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import EmbeddedInfra
from infra.binaries import RedisBinaries, resolve_redis_binaries
from kernel.errors import BinaryNotFoundError


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _which(available: dict[str, str]) -> Callable[[str], str | None]:
    return available.get


def test_bundled_valkey_is_preferred(tmp_path: Path) -> None:
    server = _executable(tmp_path / "bin" / "valkey-server")
    cli = _executable(tmp_path / "bin" / "valkey-cli")
    found = resolve_redis_binaries(tmp_path / "bin", which=_which({"redis-server": "/x"}))
    assert found == RedisBinaries(str(server), str(cli))


def test_the_installed_wheel_ships_valkey() -> None:
    found = resolve_redis_binaries()
    assert Path(found.server).name == "valkey-server"
    assert Path(found.cli).name == "valkey-cli"


def test_falls_back_to_valkey_on_path(tmp_path: Path) -> None:
    which = _which({"valkey-server": "/p/valkey-server", "valkey-cli": "/p/valkey-cli"})
    found = resolve_redis_binaries(tmp_path / "missing", which=which)
    assert found == RedisBinaries("/p/valkey-server", "/p/valkey-cli")


def test_falls_back_to_redis_on_path_with_its_own_cli(tmp_path: Path) -> None:
    # A valkey-server without valkey-cli is not a usable pair.
    which = _which(
        {
            "valkey-server": "/p/valkey-server",
            "redis-server": "/p/redis-server",
            "redis-cli": "/p/redis-cli",
        }
    )
    found = resolve_redis_binaries(tmp_path / "missing", which=which)
    assert found == RedisBinaries("/p/redis-server", "/p/redis-cli")


def test_a_non_executable_bundled_binary_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "valkey-server").write_text("not executable")
    (tmp_path / "valkey-cli").write_text("not executable")
    which = _which({"redis-server": "/p/redis-server", "redis-cli": "/p/redis-cli"})
    assert resolve_redis_binaries(tmp_path, which=which).server == "/p/redis-server"


def test_nothing_found_names_everything_tried(tmp_path: Path) -> None:
    with pytest.raises(BinaryNotFoundError) as caught:
        resolve_redis_binaries(tmp_path / "missing", which=_which({}))
    message = str(caught.value)
    assert "valkey-server + valkey-cli on PATH" in message
    assert "redis-server + redis-cli on PATH" in message
    assert str(tmp_path / "missing") in message


def test_start_fails_before_creating_anything_when_a_binary_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    data_dir = tmp_path / "data"
    with pytest.raises(BinaryNotFoundError, match="java"):
        EmbeddedInfra(data_dir).start(timeout=5)
    assert not data_dir.exists()
