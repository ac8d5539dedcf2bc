"""The infrastructure's credentials, generated once into the data dir.

The embedded Kafka brokers and Valkey nodes refuse clients that do not
authenticate (docs/infra.md). Their passwords are random, generated the first
time ``parley infra up`` / ``parley up`` starts them, and kept in
``<data_dir>/credentials.json`` (mode 0600, written atomically): every process
started from the same project folder reads them from there
(:meth:`kernel.settings.Settings.from_env`), unless ``PARLEY_KAFKA_USERNAME`` /
``_PASSWORD`` or ``PARLEY_REDIS_USERNAME`` / ``_PASSWORD`` say otherwise (a
deployment's secrets, docker-compose.yml).

Kafka has two users: the one every client authenticates as, and the one brokers
use between themselves, so that the clients' password can be rotated without
restarting a broker. Passwords never appear in a ``repr``, a log line or a
command line of a long-running process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kernel.errors import ConfigError

__all__ = ["CREDENTIALS_FILE", "Credentials", "ensure_credentials", "new_password",
           "read_credentials", "write_credentials"]

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
#: The names Parley gives its users when it generates the credentials.
KAFKA_USER = "parley"
KAFKA_BROKER_USER = "broker"
REDIS_USER = "parley"


def new_password() -> str:
    """32 random bytes, base64url: 256 bits, and only characters that need no quoting in
    Kafka's JAAS strings, its ``--add-scram`` syntax or Valkey's ACL rules."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Credentials:
    """Who the infrastructure's clients and brokers authenticate as."""

    kafka_username: str
    kafka_password: str = field(repr=False)
    kafka_broker_username: str
    kafka_broker_password: str = field(repr=False)
    redis_username: str
    redis_password: str = field(repr=False)

    def client_env(self) -> dict[str, str]:
        """The environment variables that make a process's clients authenticate with these
        (a child process's, or this one's: kernel.settings reads them)."""
        return {"PARLEY_KAFKA_USERNAME": self.kafka_username,
                "PARLEY_KAFKA_PASSWORD": self.kafka_password,
                "PARLEY_REDIS_USERNAME": self.redis_username,
                "PARLEY_REDIS_PASSWORD": self.redis_password}

    @classmethod
    def generate(cls) -> Credentials:
        return cls(KAFKA_USER, new_password(), KAFKA_BROKER_USER, new_password(),
                   REDIS_USER, new_password())

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value or not value.isprintable() or any(c in value for c in ' ",;[]=\'\\'):
                raise ConfigError(f"{CREDENTIALS_FILE}:{name}", "<hidden>" if "password" in name
                                  else value, "a non-empty value without spaces, quotes, "
                                  "commas, semicolons, brackets, '=' or backslashes")


def _path(data_dir: Path) -> Path:
    return Path(data_dir) / CREDENTIALS_FILE


def read_credentials(data_dir: Path) -> Credentials | None:
    """The credentials kept in ``data_dir``, or None when there are none.

    A file that others than its owner may read is still read, with a warning (the
    infrastructure would not start without it); one that cannot be parsed raises
    :class:`ConfigError` saying how to start over.
    """
    path = _path(data_dir)
    try:
        mode = path.stat().st_mode
        raw = json.loads(path.read_text())
        credentials = Credentials(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), "<hidden>", "the JSON credentials file Parley wrote; "
                          f"it cannot be read ({type(exc).__name__}). Restore it, or delete "
                          "the whole data dir to start over with new credentials") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("infra.credentials.readable_by_others path=%s (chmod 600 it)", path)
    return credentials


def write_credentials(data_dir: Path, credentials: Credentials) -> Path:
    """Write ``credentials`` to ``data_dir`` with mode 0600, atomically (a reader never
    sees half a file, and the file is never readable by others, not even briefly)."""
    path = _path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(credentials), out, indent=2)
            out.write("\n")
        os.replace(building, path)
    except BaseException:
        building.unlink(missing_ok=True)
        raise
    return path


def ensure_credentials(data_dir: Path) -> Credentials:
    """The credentials of ``data_dir``, generated and written the first time."""
    kept = read_credentials(data_dir)
    if kept is not None:
        return kept
    generated = Credentials.generate()
    path = write_credentials(data_dir, generated)
    logger.info("infra.credentials.generated path=%s", path)
    return generated
