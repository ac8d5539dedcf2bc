"""How every Kafka and Redis client of Parley authenticates: one place for it.

The brokers take clients over SASL/SCRAM-SHA-512 (on plaintext, loopback or a
private network: docs/infra.md), the Redis Cluster as an ACL user. The three
Kafka client libraries spell the same thing three ways; this module builds each
spelling from one :class:`KafkaCredentials`:

* confluent-kafka (gateway, followers, publishers, admin): :func:`kafka_client_config`
  for a process's :class:`~kernel.settings.Settings`, :func:`sasl_config` for a
  client given a bootstrap string;
* aiokafka (tests, benchmarks): :func:`aiokafka_sasl`;
* Faust (the worker): ``streams.app.faust_credentials``, its ``broker_credentials``
  (there, because only workers install Faust: the gateway imports this module).

A client built from a bootstrap string alone (``TopicFollower(bootstrap, ...)``)
authenticates as the process does: :func:`process_kafka_credentials` reads them
as :meth:`Settings.from_env` does, from ``PARLEY_KAFKA_USERNAME``/``_PASSWORD`` or
the data dir's ``credentials.json`` — the way libpq reads ``PGPASSWORD``. No
credentials anywhere means no authentication (a broker without SASL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernel.settings import Settings

__all__ = [
    "SCRAM_MECHANISM",
    "KafkaCredentials",
    "RedisCredentials",
    "aiokafka_sasl",
    "bootstrap_config",
    "kafka_client_config",
    "kafka_credentials",
    "process_kafka_credentials",
    "process_redis_credentials",
    "redis_credentials",
    "sasl_config",
]

SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class KafkaCredentials:
    """A SASL/SCRAM user; the password stays out of ``repr``."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RedisCredentials:
    """A Redis ACL user (``AUTH username password``); the password stays out of ``repr``."""

    username: str
    password: str = field(repr=False)


def kafka_credentials(settings: Settings) -> KafkaCredentials | None:
    if not settings.kafka_username:
        return None
    return KafkaCredentials(settings.kafka_username, settings.kafka_password)


def redis_credentials(settings: Settings) -> RedisCredentials | None:
    if not settings.redis_username:
        return None
    return RedisCredentials(settings.redis_username, settings.redis_password)


def process_kafka_credentials() -> KafkaCredentials | None:
    """This process's Kafka credentials: from the environment, else the data dir."""
    return kafka_credentials(Settings.from_env())


def process_redis_credentials() -> RedisCredentials | None:
    """This process's Redis credentials: from the environment, else the data dir."""
    return redis_credentials(Settings.from_env())


def sasl_config(credentials: KafkaCredentials | None) -> dict[str, Any]:
    """confluent-kafka (librdkafka) properties that authenticate as ``credentials``."""
    if credentials is None:
        return {}
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": credentials.username,
        "sasl.password": credentials.password,
    }


def bootstrap_config(bootstrap: str, credentials: KafkaCredentials | None = None
                     ) -> dict[str, Any]:
    """confluent-kafka properties to reach ``bootstrap`` as ``credentials`` (None: as this
    process does, :func:`process_kafka_credentials`)."""
    return {"bootstrap.servers": bootstrap,
            **sasl_config(credentials or process_kafka_credentials())}


def kafka_client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka client's configuration for ``settings``' cluster: bootstrap
    servers, authentication, then ``extra`` (e.g. ``group.id``)."""
    return {"bootstrap.servers": settings.kafka_bootstrap,
            **sasl_config(kafka_credentials(settings)), **extra}


def aiokafka_sasl(credentials: KafkaCredentials | None) -> dict[str, Any]:
    """Keyword arguments of an aiokafka producer or consumer that authenticate."""
    if credentials is None:
        return {}
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SCRAM_MECHANISM,
        "sasl_plain_username": credentials.username,
        "sasl_plain_password": credentials.password,
    }
