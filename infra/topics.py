"""Creating the bus's topics with their partition counts (idempotent)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic, TopicMetadata

from infra.broker import admin_client
from infra.waiting import Deadline, wait_until
from kernel.errors import InfraError
from streams.security import KafkaCredentials
from streams.topics import TopicSpec

__all__ = ["broker_count", "ensure_topics"]

logger = logging.getLogger(__name__)

# Errors that mean "the broker refuses this topic config", not "the broker is broken".
_CONFIG_REJECTED = {
    KafkaError.INVALID_CONFIG,
    KafkaError.POLICY_VIOLATION,
    KafkaError.INVALID_REQUEST,
}


def broker_count(bootstrap: str, timeout: float = 30,
                 credentials: KafkaCredentials | None = None) -> int:
    """How many brokers the cluster at ``bootstrap`` has (to size replication)."""
    deadline = Deadline(timeout)
    admin = admin_client(bootstrap, credentials)
    wait_until(lambda: bool(_metadata(admin, bootstrap, deadline).brokers), deadline,
               f"a broker at {bootstrap}")
    return len(_metadata(admin, bootstrap, deadline).brokers)


def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30,
                  credentials: KafkaCredentials | None = None) -> None:
    """Create the topics of ``specs`` that do not exist, then wait until all are usable.

    Existing topics are left as they are (a different partition count is logged,
    not changed). A compacted spec is created with ``cleanup.policy=compact``; if
    the broker rejects that config the topic is created without it and a warning
    is logged. Returns once the metadata of every topic lists all its partitions.

    Raises :class:`InfraError` if the broker cannot be reached (or refuses
    ``credentials``; None: this process's, streams/security.py) or a topic cannot
    be created within ``timeout`` seconds.
    """
    if not specs:
        return
    deadline = Deadline(timeout)
    admin = admin_client(bootstrap, credentials)
    existing = _metadata(admin, bootstrap, deadline).topics
    missing = [spec for spec in specs if spec.name not in existing]
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have != spec.partitions:
                logger.warning(
                    "infra.topic.partitions_differ topic=%s have=%s want=%s (left unchanged)",
                    spec.name,
                    have,
                    spec.partitions,
                )
    if missing:
        _create(admin, missing, deadline)
    _wait_partitions(admin, bootstrap, specs, set(existing), deadline)


def _remaining(deadline: Deadline) -> float:
    """A client call's timeout: what is left, but never zero (librdkafka would not wait)."""
    return max(0.1, deadline.remaining())


def _metadata(
    admin: AdminClient, bootstrap: str, deadline: Deadline, topic: str | None = None
) -> ClusterMetadata:
    try:
        return admin.list_topics(topic=topic, timeout=_remaining(deadline))
    except KafkaException as exc:
        raise InfraError(f"cannot read topic metadata from Kafka at {bootstrap}: {exc}") from exc


def _new_topic(spec: TopicSpec, with_config: bool) -> NewTopic:
    config = spec.config() if with_config else {}
    return NewTopic(spec.name, num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor, config=config)


def _create(admin: AdminClient, specs: list[TopicSpec], deadline: Deadline) -> None:
    retry_without_config: list[TopicSpec] = []
    pending = {spec.name: spec for spec in specs}
    futures = admin.create_topics(
        [_new_topic(spec, True) for spec in specs], request_timeout=_remaining(deadline)
    )
    for name, future in futures.items():
        spec = pending[name]
        try:
            future.result()
            logger.info("infra.topic.created topic=%s partitions=%s", name, spec.partitions)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created concurrently by someone else: fine
            if spec.config() and error.code() in _CONFIG_REJECTED:
                logger.warning(
                    "infra.topic.config_rejected config=%s topic=%s error=%s (creating it without)",
                    spec.config(),
                    name,
                    error.str(),
                )
                retry_without_config.append(spec)
                continue
            raise InfraError(f"cannot create topic {name}: {error.str()}") from exc
    if retry_without_config:
        futures = admin.create_topics(
            [_new_topic(spec, False) for spec in retry_without_config],
            request_timeout=_remaining(deadline),
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise InfraError(f"cannot create topic {name}: {error.str()}") from exc


def _ready(meta: TopicMetadata | None, want: int, preexisting: bool) -> bool:
    """All partitions listed (or, for a topic that existed, whatever it has) and led."""
    if meta is None or meta.error is not None or not meta.partitions:
        return False
    if len(meta.partitions) < want and not preexisting:
        return False
    return all(p.leader >= 0 for p in meta.partitions.values())


def _wait_partitions(
    admin: AdminClient,
    bootstrap: str,
    specs: list[TopicSpec],
    preexisting: set[str],
    deadline: Deadline,
) -> None:
    waiting = {spec.name: spec.partitions for spec in specs}

    def all_ready() -> bool:
        topics = _metadata(admin, bootstrap, deadline).topics
        for name, want in list(waiting.items()):
            if _ready(topics.get(name), want, name in preexisting):
                del waiting[name]
        return not waiting

    try:
        wait_until(all_ready, deadline, f"topics on {bootstrap}")
    except InfraError as exc:
        if not deadline.expired():  # the broker could not be read: that error says it best
            raise
        raise InfraError(
            f"topics not ready on {bootstrap} in time: "
            + ", ".join(f"{name} ({n} partitions)" for name, n in sorted(waiting.items()))
        ) from exc
