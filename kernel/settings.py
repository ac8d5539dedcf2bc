"""Process settings, read once from the environment.

Every setting has an environment variable, a default and a docstring-like help
text. Values are parsed strictly and then checked (ports, counts, ``host:port``
lists): a malformed value, or one that cannot work, stops the process at
start-up with the variable's name and what was expected, instead of being
silently replaced by a default or failing later.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, Self

from kernel.errors import ConfigError

__all__ = ["EnvSettings", "Settings", "parse_bool", "setting"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(raw: str) -> bool:
    """Parse a boolean explicitly: ``bool("0")`` is true, which is never what is meant."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_float(raw: str) -> float:
    return float(raw.strip())


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_path(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


# Keyed by the annotation's text (annotations are strings under PEP 563).
_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": parse_bool,
    "int": _parse_int,
    "float": _parse_float,
    "str": _parse_str,
    "Path": _parse_path,
}


#: ``rate:burst`` of a rate limit: messages a minute (> 0) and a burst (>= 1).
_RATE = re.compile(r"(?=[0-9.]*[1-9])[0-9]{1,9}(\.[0-9]{1,6})?:[1-9][0-9]{0,8}")
_ADDRESS = re.compile(r"[^,]*:[0-9]{1,5}")


def _is_address_list(value: str) -> bool:
    """``host:port[,host:port...]`` (an empty host means 127.0.0.1), ports 1-65535."""
    items = [item.strip() for item in value.split(",")]
    return all(_ADDRESS.fullmatch(item) and 1 <= int(item.rpartition(":")[2]) <= 65535
               for item in items)


def setting(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


class EnvSettings:
    """Base of frozen dataclasses whose fields are declared with :func:`setting`.

    Reads each field from its environment variable, parsed by the field's type;
    a malformed value raises :class:`ConfigError` naming the variable.
    """

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            name = f.metadata["env"]
            if name not in env:
                continue
            try:
                values[f.name] = _PARSERS[str(f.type)](env[name])
            except ValueError as exc:
                raise ConfigError(name, env[name], f"{f.metadata['help']} ({exc})") from exc
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a child process."""
        env = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            env[f.metadata["env"]] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(env, default, help) for every setting; used by ``parley settings``.

        Defaults are shown as they would be written: strings quoted, paths as paths."""
        return [(f.metadata["env"], _shown(f.default), f.metadata["help"])
                for f in fields(cls)]  # type: ignore[arg-type]


def _shown(default: Any) -> str:
    return str(default) if isinstance(default, Path) else repr(default)


@dataclass(frozen=True)
class Settings(EnvSettings):
    """All knobs of a Parley process. Build with :meth:`from_env`."""

    # --- infrastructure -------------------------------------------------
    kafka_bootstrap: str = setting(
        "127.0.0.1:9092", "PARLEY_KAFKA_BOOTSTRAP", "Kafka bootstrap servers (host:port,...)."
    )
    redis_nodes: str = setting(
        "127.0.0.1:7000",
        "PARLEY_REDIS_NODES",
        "Startup nodes of the Redis Cluster (host:port,...); the rest is discovered.",
    )
    schema_registry_url: str = setting(
        "",
        "PARLEY_SCHEMA_REGISTRY_URL",
        "Confluent schema registry URL. Empty: Avro single-object encoding, no registry.",
    )
    data_dir: Path = setting(
        Path(".parley"), "PARLEY_DATA_DIR", "Folder for embedded infrastructure data and logs."
    )
    chat_partitions: int = setting(
        0,
        "PARLEY_CHAT_PARTITIONS",
        "Partitions of the chat and knowledge topics when Parley creates them (the most "
        "workers that can share the load); 0 takes streams/topics.toml's, the topic "
        "configuration every deployment shares. Set it only to try another count "
        "(benchmarks do).",
    )
    fetch_max_wait_ms: int = setting(
        500,
        "PARLEY_FETCH_MAX_WAIT_MS",
        "Consumer fetch long-poll (workers and the gateways' reply followers). Kafka "
        "answers a waiting fetch as soon as data arrives, so this bounds only how often an "
        "idle consumer wakes up, not latency.",
    )
    gateway_linger_ms: float = setting(
        2.0,
        "PARLEY_GATEWAY_LINGER_MS",
        "How long a gateway's producer waits to batch messages from different sockets. "
        "Brokers pay per request, so a few ms saves their CPU under load.",
    )
    gateway_busy_rate: float = setting(
        400.0,
        "PARLEY_GATEWAY_BUSY_RATE",
        "Messages a second from which a gateway counts as busy and holds messages "
        "PARLEY_GATEWAY_BUSY_LINGER_MS before numbering and producing them together.",
    )
    gateway_busy_linger_ms: float = setting(
        40.0,
        "PARLEY_GATEWAY_BUSY_LINGER_MS",
        "How long a busy gateway holds accepted messages to number and produce them "
        "together (0: never): one Redis call per primary and one produce request per "
        "linger. At 2,000 msg/s on two cores, p99 180-197 ms against 290 ms with 10 ms "
        "and 596 ms with 0: the cores spend less on requests (docs/benchmarks.md).",
    )
    topic_prefix: str = setting(
        "", "PARLEY_TOPIC_PREFIX", "Prefix for every topic name (isolates tests and tenants)."
    )
    # --- gateway ----------------------------------------------------------
    gateway_host: str = setting("127.0.0.1", "PARLEY_GATEWAY_HOST", "Gateway listen address.")
    gateway_port: int = setting(8080, "PARLEY_GATEWAY_PORT", "Gateway listen port (0: any).")
    gateway_id: str = setting(
        "", "PARLEY_GATEWAY_ID", "Name of this gateway instance; empty: host name + pid."
    )
    max_text_bytes: int = setting(
        8192, "PARLEY_MAX_TEXT_BYTES", "Largest accepted message text, in UTF-8 bytes."
    )
    max_frame_bytes: int = setting(
        1 << 20,
        "PARLEY_MAX_FRAME_BYTES",
        "Largest WebSocket frame read at all; larger frames close the connection (1009).",
    )
    ping_interval_s: float = setting(
        20.0, "PARLEY_PING_INTERVAL_S", "Seconds between keepalive pings to every socket."
    )
    ping_timeout_s: float = setting(
        20.0, "PARLEY_PING_TIMEOUT_S", "Seconds a socket has to answer a ping before it is closed."
    )
    gateway_max_in_flight: int = setting(
        500,
        "PARLEY_GATEWAY_MAX_IN_FLIGHT",
        "Messages a gateway keeps on the bus without a reply; beyond, new ones get a "
        "retryable `overloaded` error instead of queueing behind a backlog.",
    )
    gateway_in_flight_expiry_s: float = setting(
        30.0,
        "PARLEY_GATEWAY_IN_FLIGHT_EXPIRY_S",
        "Seconds after which a message still without a reply stops counting as in flight.",
    )
    gateway_send_queue: int = setting(
        1024,
        "PARLEY_GATEWAY_SEND_QUEUE",
        "Frames a gateway holds for one client that is not reading (replies, acks); one "
        "more closes its connection (1008) so that it cannot hold the gateway's memory. "
        "Above a replay's 500 replies.",
    )
    gateway_send_timeout_s: float = setting(
        20.0,
        "PARLEY_GATEWAY_SEND_TIMEOUT_S",
        "Seconds a write to a client may wait for it to read; then its connection is "
        "closed (1008) and the frames held for it are dropped.",
    )
    outbox_size: int = setting(
        200, "PARLEY_OUTBOX_SIZE", "Replies kept per conversation for clients that resume."
    )
    rate_default: str = setting(
        "60:10",
        "PARLEY_RATE_DEFAULT",
        "Messages a minute and burst (`rate:burst`) one user of the `default` tier may send "
        "(gateway/limits.py); a tenant's configuration may set its own.",
    )
    rate_authenticated: str = setting(
        "300:50", "PARLEY_RATE_AUTHENTICATED",
        "Messages a minute and burst (`rate:burst`) of one user of the `authenticated` tier.",
    )
    rate_premium: str = setting(
        "1000:100", "PARLEY_RATE_PREMIUM",
        "Messages a minute and burst (`rate:burst`) of one user of the `premium` tier.",
    )
    rate_tenant: str = setting(
        "300000:20000",
        "PARLEY_RATE_TENANT",
        "Messages a minute and burst (`rate:burst`) of all the users of one tenant together; "
        "`off`: no tenant-wide limit.",
    )
    # --- workers ----------------------------------------------------------
    worker_web_host: str = setting(
        "127.0.0.1", "PARLEY_WORKER_WEB_HOST", "Worker HTTP listen address."
    )
    worker_web_port: int = setting(
        6066, "PARLEY_WORKER_WEB_PORT", "Worker HTTP port (/healthz, /readyz, /metrics)."
    )
    worker_batch_size: int = setting(
        256, "PARLEY_WORKER_BATCH_SIZE", "Most events an agent takes from its stream at once."
    )
    consumer_group: str = setting(
        "parley-workers", "PARLEY_CONSUMER_GROUP", "Faust application id / consumer group."
    )
    session_ttl_s: int = setting(
        30 * 24 * 3600, "PARLEY_SESSION_TTL_S", "Default retention of conversation state."
    )
    knowledge: bool = setting(
        True,
        "PARLEY_KNOWLEDGE",
        "Run the knowledge agent: questions are answered from PARLEY_KB_INDEX, or the demo "
        "domain's knowledge base.",
    )
    bot_dir: str = setting(
        "",
        "PARLEY_BOT",
        "The bot folder workers serve (docs/bots.md); empty: the demo bot (examples/demo).",
    )
    nlu_model_dir: str = setting(
        "",
        "PARLEY_NLU_MODEL",
        "NLU model folder; empty: the bot's model (trained on first use).",
    )
    log_level: str = setting("INFO", "PARLEY_LOG_LEVEL", "Logging level.")
    log_json: bool = setting(True, "PARLEY_LOG_JSON", "Structured JSON logs (false: plain text).")

    def __post_init__(self) -> None:
        """Refuse values that parse but cannot work, naming the variable (fail at start-up)."""
        for name in ("kafka_bootstrap", "redis_nodes"):
            if not _is_address_list(getattr(self, name)):
                self._invalid(name, "host:port[,host:port...] with ports from 1 to 65535")
        for name, lowest in (("gateway_port", 0), ("worker_web_port", 1)):
            if not lowest <= getattr(self, name) <= 65535:
                self._invalid(name, f"a port from {lowest} to 65535")
        if self.chat_partitions < 0:
            self._invalid("chat_partitions", "a whole number >= 0 (0: streams/topics.toml's)")
        for name in ("max_text_bytes", "max_frame_bytes", "gateway_send_queue",
                     "gateway_max_in_flight", "outbox_size", "worker_batch_size",
                     "session_ttl_s"):  # fmt: skip
            if getattr(self, name) < 1:
                self._invalid(name, "a whole number >= 1")
        for name in ("fetch_max_wait_ms", "gateway_linger_ms", "gateway_busy_linger_ms"):
            if not 0 <= getattr(self, name) < math.inf:
                self._invalid(name, "a number >= 0")
        for name in ("ping_interval_s", "ping_timeout_s", "gateway_in_flight_expiry_s",
                     "gateway_send_timeout_s"):
            if not 0 < getattr(self, name) < math.inf:
                self._invalid(name, "a number of seconds > 0")
        if not self.gateway_busy_rate > 0:
            self._invalid("gateway_busy_rate", "a number of messages a second > 0")
        for name in ("rate_default", "rate_authenticated", "rate_premium", "rate_tenant"):
            value = getattr(self, name)
            if not (_RATE.fullmatch(value) or (name == "rate_tenant" and value == "off")):
                self._invalid(name, "`rate:burst`, messages a minute > 0 and a whole burst >= 1"
                              + (", or `off`" if name == "rate_tenant" else ""))

    def _invalid(self, name: str, expected: str) -> NoReturn:
        env = self.__dataclass_fields__[name].metadata["env"]
        raise ConfigError(env, str(getattr(self, name)), expected)

    @property
    def kafka_port(self) -> int:
        """The port of the first bootstrap address (where an embedded broker listens)."""
        return int(self.kafka_bootstrap.split(",")[0].rpartition(":")[2])

    @property
    def redis_startup_nodes(self) -> list[tuple[str, int]]:
        nodes = []
        for item in self.redis_nodes.split(","):
            host, _, port = item.strip().rpartition(":")
            nodes.append((host or "127.0.0.1", int(port)))
        return nodes

    def topic(self, name: str) -> str:
        """The full name of a logical topic (``chat.inbound`` → prefix + name)."""
        return f"{self.topic_prefix}{name}"
