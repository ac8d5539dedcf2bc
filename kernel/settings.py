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

from kernel.credentials import read_credentials
from kernel.errors import ConfigError

__all__ = ["EnvSettings", "Settings", "parse_bool", "secret", "setting"]

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


def setting(default: Any, env: str, help: str, *, secret: bool = False) -> Any:
    """A field read from ``env``; a ``secret`` one is left out of the settings' ``repr``."""
    return field(default=default, repr=not secret, metadata={"env": env, "help": help})


def secret(env: str, help: str) -> Any:
    """A setting that must never be shown: left out of the settings' ``repr`` (so a
    logged or printed ``Settings`` does not carry it). Empty by default."""
    return field(default="", repr=False, metadata={"env": env, "help": help})


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
        "PARLEY_GATEWAY_BUSY_LINGER_MS before checking their rate limits, numbering and "
        "producing them together.",
    )
    gateway_busy_linger_ms: float = setting(
        40.0,
        "PARLEY_GATEWAY_BUSY_LINGER_MS",
        "How long a busy gateway holds arriving messages to check, number and produce them "
        "together (0: never): one rate-limit call, one Redis call per primary and one "
        "produce request per linger. At 2,000 msg/s on two cores, p99 180-197 ms against "
        "290 ms with 10 ms and 596 ms with 0: the cores spend less on requests "
        "(docs/benchmarks.md).",
    )
    kafka_username: str = setting(
        "",
        "PARLEY_KAFKA_USERNAME",
        "SASL/SCRAM-SHA-512 user of every Kafka client. Empty (with the password): the one "
        "in PARLEY_DATA_DIR/credentials.json, written by `parley infra up`; none there: "
        "connect without authenticating.",
    )
    kafka_password: str = setting(
        "", "PARLEY_KAFKA_PASSWORD", "Password of PARLEY_KAFKA_USERNAME.", secret=True
    )
    redis_username: str = setting(
        "",
        "PARLEY_REDIS_USERNAME",
        "ACL user of every Redis client. Empty (with the password): the one in "
        "PARLEY_DATA_DIR/credentials.json; none there: connect without authenticating.",
    )
    redis_password: str = setting(
        "", "PARLEY_REDIS_PASSWORD", "Password of PARLEY_REDIS_USERNAME.", secret=True
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
    jwt_leeway_s: float = setting(
        30.0,
        "PARLEY_JWT_LEEWAY_S",
        "Clock skew forgiven when checking a token's exp and nbf, in seconds (at most 300).",
    )
    dev_mode: bool = setting(
        False,
        "PARLEY_DEV_MODE",
        "Development mode: the gateway serves GET /dev/token, a short-lived token for a new "
        "user of PARLEY_DEV_TENANT (`parley up` turns it on). Never in production.",
    )
    dev_tenant: str = setting(
        "demo", "PARLEY_DEV_TENANT", "The tenant whose users /dev/token mints tokens for."
    )
    gateway_api_port: int = setting(
        8081,
        "PARLEY_GATEWAY_API_PORT",
        "Gateway HTTP API port (0: any): POST endpoints such as the Slack and Twilio "
        "webhooks (gateway/api.py). The /ws port accepts GET only.",
    )
    # --- channels (docs/channels.md) ---------------------------------------
    slack_signing_secret: str = secret(
        "PARLEY_SLACK_SIGNING_SECRET",
        "The Slack app's signing secret; empty: the Slack channel is off.",
    )
    slack_bot_token: str = secret(
        "PARLEY_SLACK_BOT_TOKEN", "The Slack app's bot token (xoxb-...), to post replies."
    )
    slack_tenant: str = setting(
        "demo", "PARLEY_SLACK_TENANT", "Tenant the Slack workspace's conversations belong to."
    )
    slack_api_url: str = setting(
        "https://slack.com/api", "PARLEY_SLACK_API_URL", "Base URL of Slack's Web API."
    )
    twilio_account_sid: str = setting(
        "", "PARLEY_TWILIO_ACCOUNT_SID", "Twilio account SID (AC...), to send SMS replies."
    )
    twilio_auth_token: str = secret(
        "PARLEY_TWILIO_AUTH_TOKEN",
        "Twilio auth token: checks webhook signatures and sends replies; empty: SMS is off.",
    )
    twilio_tenant: str = setting(
        "demo", "PARLEY_TWILIO_TENANT", "Tenant the Twilio numbers' conversations belong to."
    )
    twilio_api_url: str = setting(
        "https://api.twilio.com", "PARLEY_TWILIO_API_URL", "Base URL of Twilio's REST API."
    )
    twilio_webhook_url: str = setting(
        "",
        "PARLEY_TWILIO_WEBHOOK_URL",
        "The public URL Twilio posts SMS to, exactly as configured on the number (Twilio "
        "signs it); empty: the URL the request arrived at (right without a proxy in front).",
    )
    channel_consumer_group: str = setting(
        "parley-channels",
        "PARLEY_CHANNEL_CONSUMER_GROUP",
        "Consumer group (after PARLEY_TOPIC_PREFIX) of the gateways that send replies to "
        "Slack and SMS: one gateway sends each reply.",
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Settings from the environment; Kafka and Redis credentials that neither the
        environment nor ``overrides`` give come from the data dir (kernel/credentials.py)."""
        settings = super().from_env(environ, **overrides)
        kafka_given = settings.kafka_username or settings.kafka_password
        redis_given = settings.redis_username or settings.redis_password
        if kafka_given and redis_given:
            return settings
        kept = read_credentials(settings.data_dir)
        if kept is None:
            return settings
        changes: dict[str, str] = {}
        if not kafka_given:
            changes.update(kafka_username=kept.kafka_username, kafka_password=kept.kafka_password)
        if not redis_given:
            changes.update(redis_username=kept.redis_username, redis_password=kept.redis_password)
        return settings.replace(**changes)

    def __post_init__(self) -> None:
        """Refuse values that parse but cannot work, naming the variable (fail at start-up)."""
        for name in ("kafka_bootstrap", "redis_nodes"):
            if not _is_address_list(getattr(self, name)):
                self._invalid(name, "host:port[,host:port...] with ports from 1 to 65535")
        for name, lowest in (("gateway_port", 0), ("gateway_api_port", 0),
                             ("worker_web_port", 1)):
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
        if not 0 <= self.jwt_leeway_s <= 300:
            self._invalid("jwt_leeway_s", "a number of seconds from 0 to 300")
        if not self.gateway_busy_rate > 0:
            self._invalid("gateway_busy_rate", "a number of messages a second > 0")
        for name in ("slack_api_url", "twilio_api_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                self._invalid(name, "an http:// or https:// URL")
        if self.twilio_auth_token and not self.twilio_account_sid:
            self._invalid("twilio_account_sid", "the account SID that goes with "
                          "PARLEY_TWILIO_AUTH_TOKEN")
        if self.slack_signing_secret and not self.slack_bot_token:
            self._invalid("slack_bot_token", "the bot token that goes with "
                          "PARLEY_SLACK_SIGNING_SECRET")
        for user, password in (("kafka_username", "kafka_password"),
                               ("redis_username", "redis_password")):  # fmt: skip
            if bool(getattr(self, user)) != bool(getattr(self, password)):
                env = self.__dataclass_fields__[password].metadata["env"]
                raise ConfigError(f"{self.__dataclass_fields__[user].metadata['env']} / {env}",
                                  "<hidden>", "both set, or neither")
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
