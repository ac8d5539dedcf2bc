"""``<data_dir>/pids.json``: which processes a detached ``parley infra up`` left running.

Each entry keeps the process's start time, so a pid reused by an unrelated
process after a reboot or a crash is never signalled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kernel.errors import InfraError

__all__ = ["PID_FILE", "PidFile", "PidRecord", "read_pidfile", "remove_pidfile", "write_pidfile"]

PID_FILE = "pids.json"
_VERSION = 2  # 2: several Kafka nodes (kafka_ports, controller_ports)
# create_time() is rounded differently across calls on some systems.
_CREATE_TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class PidRecord:
    name: str
    pid: int
    port: int
    create_time: float

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None (exited, or the pid was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > _CREATE_TIME_TOLERANCE:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return proc


@dataclass(frozen=True)
class PidFile:
    host: str
    kafka_ports: list[int]
    redis_ports: list[int]
    processes: list[PidRecord] = field(default_factory=list)
    controller_ports: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = _VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PidFile:
        if data.get("version") != _VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return cls(
            host=str(data["host"]),
            kafka_ports=[int(p) for p in data["kafka_ports"]],
            redis_ports=[int(p) for p in data["redis_ports"]],
            controller_ports=[int(p) for p in data["controller_ports"]],
            processes=[
                PidRecord(str(p["name"]), int(p["pid"]), int(p["port"]), float(p["create_time"]))
                for p in data["processes"]
            ],
        )

    def live(self) -> list[tuple[PidRecord, psutil.Process]]:
        out = []
        for record in self.processes:
            proc = record.process()
            if proc is not None:
                out.append((record, proc))
        return out


def write_pidfile(data_dir: Path, content: PidFile) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    path = data_dir / PID_FILE
    tmp = path.with_name(f".{PID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_pidfile(data_dir: Path) -> PidFile | None:
    """The recorded processes, or None if there is no pid file."""
    path = data_dir / PID_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return PidFile.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise InfraError(
            f"{path} is unreadable ({exc}); if no Parley infrastructure runs, delete it"
        ) from exc


def remove_pidfile(data_dir: Path) -> None:
    (data_dir / PID_FILE).unlink(missing_ok=True)
