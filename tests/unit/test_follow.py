"""TopicFollower without a broker: a stand-in consumer feeds it records and partition ends."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streams import follow
from streams.errors import FollowerError, TopicNotFoundError
from streams.follow import TopicFollower


class _Error:
    def __init__(self, code: int, fatal: bool = False) -> None:
        self._code, self._fatal = code, fatal

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def str(self) -> str:
        return f"error {self._code}"


class _Msg:
    def __init__(self, partition: int, value: bytes | None = None,
                 error: _Error | None = None) -> None:
        self._partition, self._value, self._error = partition, value, error

    def error(self) -> _Error | None:
        return self._error

    def partition(self) -> int:
        return self._partition

    def value(self) -> bytes | None:
        return self._value


def _end(partition: int) -> _Msg:
    return _Msg(partition, error=_Error(KafkaError._PARTITION_EOF))


class _Consumer:
    """What the follower uses of confluent_kafka.Consumer."""

    partitions: tuple[int, ...] = (0, 1)
    queued: deque[_Msg]

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.assigned: list[Any] = []
        self.closed = threading.Event()

    def list_topics(self, topic: str, timeout: float) -> Any:
        found = type("T", (), {"partitions": dict.fromkeys(self.partitions), "error": None})
        return type("M", (), {"topics": {"known": found} if self.partitions else {}})

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
        return 0, 40 + partition.partition  # each partition's end, as the broker says now

    def poll(self, timeout: float) -> _Msg | None:
        return self.queued.popleft() if self.queued else None

    def consume(self, n: int, timeout: float) -> list[_Msg]:
        return [self.queued.popleft() for _ in range(min(n, len(self.queued)))]

    def close(self) -> None:
        self.closed.set()


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> type[_Consumer]:
    _Consumer.partitions = (0, 1)
    _Consumer.queued = deque()
    monkeypatch.setattr(follow, "Consumer", _Consumer)
    return _Consumer


def test_records_arrive_in_batches_and_the_end_is_noticed(consumer: type[_Consumer]) -> None:
    consumer.queued.extend([_Msg(0, b"a"), _Msg(1, b"b"), _end(0), _Msg(1, b"c"), _end(1)])
    batches: list[list[bytes | None]] = []
    follower = TopicFollower("x:1", "known", lambda records: batches.append(
        [r.value() for r in records]), from_beginning=True, batch_size=2)
    follower.assign()
    follower.start()
    assert follower.caught_up.wait(5)
    follower.stop()
    assert [v for batch in batches for v in batch] == [b"a", b"b", b"c"]
    assert all(batches) and follower.error is None


def test_a_missing_topic_is_refused_by_name(consumer: type[_Consumer]) -> None:
    consumer.partitions = ()
    follower = TopicFollower("x:1", "missing", lambda records: None, from_beginning=True)
    with pytest.raises(TopicNotFoundError, match="missing: it does not exist"):
        follower.assign()
    follower.stop()


def test_a_fatal_error_stops_the_follower_and_is_kept(consumer: type[_Consumer]) -> None:
    consumer.queued.append(_Msg(0, error=_Error(KafkaError._FATAL, fatal=True)))
    follower = TopicFollower("x:1", "known", lambda records: None, from_beginning=False)
    follower.start()  # assigns in the background
    deadline = time.monotonic() + 5
    while follower.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    follower.stop()
    assert follower.assigned.is_set()
    assert isinstance(follower.error, FollowerError)
    assert not follower.caught_up.is_set()


def test_a_follower_from_the_end_starts_where_the_end_is_when_it_is_assigned(
    consumer: type[_Consumer],
) -> None:
    # Not OFFSET_END, which librdkafka resolves only at its first fetch: a record produced
    # in between (a reply to a message sent as soon as a gateway was ready) was skipped.
    follower = TopicFollower("x:1", "known", lambda records: None, from_beginning=False)
    follower.assign()
    assigned = follower._consumer.assigned
    follower.stop()
    assert [(tp.partition, tp.offset) for tp in assigned] == [(0, 40), (1, 41)]
