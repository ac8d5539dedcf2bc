"""A bot version as one record: packed from folders, checked, unpacked by content address.

A published version is every file a worker needs to serve the bot: the bot
folder (``bot/...``: its YAML files, knowledge documents) and its trained NLU
model (``nlu/...``: ``manifest.json``, ``intent.onnx``, ...). They travel as one
``BotVersion`` record (schemas/bot_version.avsc) on the compacted ``bots`` topic,
keyed by tenant, so a worker sees a version whole or not at all, and
compaction keeps exactly the current version of each tenant.

The version is a content address: SHA-256 over each file's path and the
SHA-256 of its bytes, in path order. Two tenants that publish the same files
share one version (one folder, one loaded model); publishing the same files
again changes nothing a worker holds.

A worker trusts nothing in a record: :func:`check_record` refuses (with
:class:`BundleError`) a path that is absolute, climbs out (``..``), is not under
``bot/`` or ``nlu/`` or appears twice, a file whose bytes do not match its
checksum, and a version that does not match the files. :func:`unpack` then
writes the files into ``<root>/<version>/`` through a folder built aside and
renamed into place (:func:`kernel.files.atomic_directory`): a folder that
exists is whole, and is used as it is.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from agents.bots.errors import BotPublishError, BundleError
from kernel.files import atomic_directory
from streams.keys import InvalidIdError, validate_id

__all__ = ["BOT_PREFIX", "NLU_PREFIX", "BotBundle", "UnpackedBot", "bundle_from_folders",
           "check_record", "collect_files", "millis", "unpack", "version_of"]

BOT_PREFIX = "bot"
NLU_PREFIX = "nlu"
_PREFIXES = (BOT_PREFIX, NLU_PREFIX)
#: Names never packed: version control, caches, editor and OS leftovers.
_SKIPPED = frozenset({".git", ".hg", ".svn", "__pycache__", ".DS_Store", ".pytest_cache",
                      ".mypy_cache", ".ruff_cache", ".venv"})


@dataclass(frozen=True)
class BotBundle:
    """One checked bot version: ``files`` maps relative POSIX paths to their bytes."""

    tenant_id: str
    version: str
    name: str
    published_at_ms: int
    published_by: str
    files: Mapping[str, bytes]
    #: 0: the tenant's stable version; 1-99: a canary for that percentage of its users
    #: (agents/bots/canary.py).
    canary_percent: int = 0

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())

    def to_record(self) -> dict[str, Any]:
        """The ``BotVersion`` Avro record."""
        return {
            "tenant_id": self.tenant_id, "bot_version": self.version, "bot_name": self.name,
            "published_at": self.published_at_ms, "published_by": self.published_by,
            "canary_percent": self.canary_percent,
            "files": [{"path": path, "data": data, "sha256": _sha256(data)}
                      for path, data in sorted(self.files.items())],
        }


@dataclass(frozen=True)
class UnpackedBot:
    """A version on a worker's disk: ``folder`` is ``<root>/<version>``."""

    version: str
    name: str
    folder: Path

    @property
    def bot_dir(self) -> Path:
        """The bot folder, as the builder wrote it."""
        return self.folder / BOT_PREFIX

    @property
    def model_dir(self) -> Path:
        """The trained NLU model folder."""
        return self.folder / NLU_PREFIX


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_of(files: Mapping[str, bytes]) -> str:
    """The content address of a set of files (SHA-256 hex)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode())
        digest.update(b"\0")
        digest.update(_sha256(files[path]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _walk(folder: Path) -> Iterable[Path]:
    for entry in sorted(folder.iterdir()):
        if entry.name in _SKIPPED or entry.name.startswith(".parley"):
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file():
            yield entry


def collect_files(bot_dir: Path, model_dir: Path) -> dict[str, bytes]:
    """Every file of the bot folder (under ``bot/``) and of the model folder (under
    ``nlu/``); raises :class:`BotPublishError` when a folder is missing or empty."""
    files: dict[str, bytes] = {}
    for prefix, folder in ((BOT_PREFIX, Path(bot_dir)), (NLU_PREFIX, Path(model_dir))):
        if not folder.is_dir():
            raise BotPublishError(f"{folder} is not a folder")
        found = list(_walk(folder))
        if not found:
            raise BotPublishError(f"{folder} has no files to publish")
        for path in found:
            files[f"{prefix}/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    return files


def bundle_from_folders(tenant_id: str, bot_dir: Path, model_dir: Path, *,
                        name: str | None = None, now_ms: int | None = None,
                        published_by: str | None = None) -> BotBundle:
    """Pack ``bot_dir`` and its trained ``model_dir`` as a version of ``tenant_id``'s bot."""
    try:
        validate_id("tenant id", tenant_id)
    except InvalidIdError as exc:
        raise BotPublishError(str(exc)) from exc
    files = collect_files(bot_dir, model_dir)
    return BotBundle(
        tenant_id=tenant_id, version=version_of(files),
        name=name or Path(bot_dir).resolve().name,
        published_at_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        published_by=published_by if published_by is not None else _who(),
        files=files,
    )


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _check_path(path: str) -> str | None:
    """What is wrong with a file's path in a record; None when it is safe."""
    if not path or "\\" in path or "\0" in path:
        return "is empty or holds a backslash or NUL"
    pure = PurePosixPath(path)
    if pure.is_absolute():
        return "is absolute"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part"
    if len(parts) < 2 or parts[0] not in _PREFIXES:
        return f"is not under {' or '.join(p + '/' for p in _PREFIXES)}"
    return None


def check_record(record: Mapping[str, Any]) -> BotBundle:
    """The :class:`BotBundle` a decoded ``BotVersion`` record holds, once every path,
    checksum and the version itself are checked; :class:`BundleError` otherwise."""
    tenant = record["tenant_id"]
    version = record["bot_version"]
    where = f"bot version {version[:12]!r} of tenant {tenant!r}"
    try:
        validate_id("tenant id", tenant)
    except InvalidIdError as exc:
        raise BundleError(f"{where}: {exc}") from exc
    files: dict[str, bytes] = {}
    for entry in record["files"]:
        path, data = entry["path"], entry["data"]
        problem = _check_path(path)
        if problem is not None:
            raise BundleError(f"{where}: path {path!r} {problem}")
        if path in files:
            raise BundleError(f"{where}: path {path!r} appears twice")
        if _sha256(data) != entry["sha256"]:
            raise BundleError(f"{where}: {path} does not match its checksum")
        files[path] = data
    prefixes = {path.split("/", 1)[0] for path in files}
    if prefixes != set(_PREFIXES):
        raise BundleError(f"{where}: needs files under both bot/ and nlu/, has "
                          f"{', '.join(sorted(prefixes)) or 'none'}")
    if version_of(files) != version:
        raise BundleError(f"{where}: the files do not make that version")
    percent = record.get("canary_percent", 0)
    if not 0 <= percent < 100:
        raise BundleError(f"{where}: canary_percent {percent} is not 0 (stable) or 1-99")
    return BotBundle(tenant, version, record["bot_name"], millis(record["published_at"]),
                     record.get("published_by", ""), files, percent)


def millis(value: datetime.datetime | int) -> int:
    """A decoded ``timestamp-millis`` (the codec gives a datetime) as ms since the epoch."""
    if isinstance(value, datetime.datetime):
        return round(value.timestamp() * 1000)
    return int(value)


def unpack(bundle: BotBundle, root: Path) -> UnpackedBot:
    """Write ``bundle``'s files to ``root/<version>/`` (once: an existing folder is whole
    and kept) and return where they are."""
    folder = Path(root) / bundle.version
    if not folder.is_dir():
        with atomic_directory(folder, replace=False) as building:
            for path, data in bundle.files.items():
                target = building.joinpath(*path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return UnpackedBot(bundle.version, bundle.name, folder)
