"""Poison events: which failures are retried, and how the others are dead-lettered.

The rule for every consumer of the bus (docs/operations.md, "Dead letters"): an
event that cannot be processed for any reason other than an unavailable
dependency goes to ``<topic>.dlq`` with the error and its origin, and the stream
moves on. No exception escapes an agent, so no single event can stop a
partition: an agent that died on one left its events unacknowledged, and the
next rebalance waited on them for minutes while the gateway kept acking.

* :func:`is_unavailable` draws the line. Retried: Redis and the broker not
  answering (connection refused or reset, timeouts, a cluster that is failing
  over, out of memory, loading). Poison: everything else, including an error
  reply about the data itself (a Lua script refusing what it was given, a record
  too large for the broker) and any bug that one event triggers.
* :func:`dead_letter_headers` is the record format. The dead letter keeps the
  original key and value bytes unchanged, so replaying one is producing it back
  to its topic; why and whence travel in headers, readable by any Kafka tool
  without a schema, and present even when the value was not Avro at all.

  ========================== ====================================================
  header                     value (UTF-8)
  ========================== ====================================================
  parley.error               the error's message (``str(error)``, ≤ 1,000 chars)
  parley.error.class         the error's class, e.g. ``streams.keys.InvalidIdError``
  parley.source.topic        the topic the event was read from
  parley.source.partition    its partition
  parley.source.offset       its offset
  parley.source.timestamp    its record timestamp (ms since the epoch; -1: none)
  parley.consumer            the agent that gave up on it, e.g. ``conversation``
  parley.dead_lettered_at    when (ms since the epoch)
  ========================== ====================================================

:func:`read_dead_letter` turns a record's headers back into a :class:`DeadLetter`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import (
    InvalidMessageError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from faust.exceptions import ProducerSendError
from redis.exceptions import DataError, RedisError, ResponseError

from streams.state import REDIS_UNAVAILABLE

__all__ = ["MAX_ERROR_CHARS", "DeadLetter", "dead_letter_headers", "is_unavailable",
           "read_dead_letter"]

#: A dead letter's error message is cut to this many characters.
MAX_ERROR_CHARS = 1000

#: Broker errors about the record itself: sending it again fails again.
_RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
                  InvalidMessageError)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says a dependency (Redis, the broker) is unavailable: then the
    work is tried again until it answers; any other error is the event's (poison)."""
    if isinstance(error, ProducerSendError) and error.__cause__ is not None:
        return is_unavailable(error.__cause__)  # Faust wraps the producer's own error
    if isinstance(error, _RECORD_ERRORS):
        return False
    if isinstance(error, (KafkaError, ProducerSendError)):
        return True
    if isinstance(error, RedisError):
        # An error reply of the plain kind is about the command and its data (a script
        # that raised, a key of the wrong type); its subclasses name the server's state
        # (CLUSTERDOWN, TRYAGAIN, MOVED, LOADING, OOM, READONLY, ...). DataError is
        # redis-py refusing an argument before sending it.
        return not (type(error) is ResponseError or isinstance(error, DataError))
    return isinstance(error, REDIS_UNAVAILABLE)  # OSError: sockets, timeouts


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What the headers of a dead letter say (see the table above)."""

    error: str
    error_class: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    consumer: str
    dead_lettered_at_ms: int


def _error_class(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _timestamp_ms(message: Any) -> int:
    """A Faust message's timestamp (seconds, float) in ms; -1 when it has none."""
    timestamp = getattr(message, "timestamp", None)
    return int(timestamp * 1000) if timestamp is not None and timestamp > 0 else -1


def dead_letter_headers(message: Any, error: BaseException, consumer: str,
                        now_ms: int | None = None) -> list[tuple[str, bytes]]:
    """The headers of the dead letter for ``message`` (a Faust message: topic, partition,
    offset, timestamp), which ``consumer`` could not process because of ``error``."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    fields = {
        "parley.error": str(error)[:MAX_ERROR_CHARS] or repr(error),
        "parley.error.class": _error_class(error),
        "parley.source.topic": message.topic,
        "parley.source.partition": str(message.partition),
        "parley.source.offset": str(message.offset),
        "parley.source.timestamp": str(_timestamp_ms(message)),
        "parley.consumer": consumer,
        "parley.dead_lettered_at": str(now_ms),
    }
    return [(name, value.encode()) for name, value in fields.items()]


def read_dead_letter(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes]
                     ) -> DeadLetter:
    """The :class:`DeadLetter` a record's headers describe (as any Kafka client lists them)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = {name: (value or b"").decode() for name, value in pairs}
    return DeadLetter(
        error=found["parley.error"],
        error_class=found.get("parley.error.class", ""),
        topic=found["parley.source.topic"],
        partition=int(found["parley.source.partition"]),
        offset=int(found["parley.source.offset"]),
        timestamp_ms=int(found.get("parley.source.timestamp", "-1")),
        consumer=found.get("parley.consumer", ""),
        dead_lettered_at_ms=int(found.get("parley.dead_lettered_at", "-1")),
    )
