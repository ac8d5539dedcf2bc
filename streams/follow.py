"""Following every partition of a topic without a consumer group.

Some readers must see every record of a topic, in every process: a gateway
delivers the replies whose socket it holds (``chat.outbound``, from its end),
a knowledge worker keeps its whole index in step with ``kb.documents`` (from
its beginning). A consumer group would share the partitions out instead, so
:class:`TopicFollower` assigns itself all of them (confluent-kafka's manual
``assign()``): there is no group to join or rebalance, nothing is committed,
the follower is reading within milliseconds, and any number of processes can
follow the same topic side by side.

confluent-kafka is a blocking C client: the follower owns one background
thread that polls it and hands the records to ``on_batch``, a batch at a time,
on that thread (a caller on an event loop passes them on with
``call_soon_threadsafe``, once per batch). It blocks only until the first
record and then takes what is already there, so a batch costs no extra wait.

Errors: a partition's end (when tracked) and transient client errors are
handled here (the latter logged); a fatal client error, or an exception raised
by ``on_batch``, stops the follower: it is logged, kept in
:attr:`TopicFollower.error`, and the consumer is closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.errors import FollowerError, TopicNotFoundError
from streams.security import bootstrap_config

__all__ = ["TableFollower", "TopicFollower"]

logger = logging.getLogger(__name__)


class TopicFollower:
    """Reads every partition of ``topic`` in a background thread, without a group.

    ``from_beginning``: read every record the topic holds, and set :attr:`caught_up`
    once each partition's end as of the start has been reached (partition ends are
    tracked for that); otherwise only records written after the start are read.

    ``on_batch`` gets the records of one poll (never an empty list), on the
    follower's thread. ``log_as`` prefixes the follower's log events
    (``<log_as>.assigned``, ``<log_as>.consume_error``, ...). The consumer
    authenticates as this process does (streams/security.py) unless ``config``
    carries SASL properties (``sasl_config(credentials)``).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_batch: Callable[[list[Message]], None],
        *,
        from_beginning: bool,
        batch_size: int = 500,
        poll_timeout_s: float = 0.1,
        log_as: str = "streams.follower",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self._on_batch = on_batch
        self._from_beginning = from_beginning
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._log_as = log_as
        self._consumer = Consumer({
            **bootstrap_config(bootstrap),
            # Required by librdkafka even with assign(); never joined, nothing committed.
            "group.id": f"parley-follower-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": from_beginning,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "socket.keepalive.enable": True,
            **(config or {}),
        })  # fmt: skip
        self._stopping = threading.Event()
        #: Set once every partition is assigned.
        self.assigned = threading.Event()
        #: Set once every record present at the start was handed over (``from_beginning``).
        self.caught_up = threading.Event()
        self._pending_ends: set[int] = set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False

    @property
    def error(self) -> BaseException | None:
        """What stopped the follower, if anything did."""
        return self._error

    # --- lifecycle ----------------------------------------------------------------

    def assign(self, timeout_s: float = 10) -> None:
        """Assign every partition of the topic now.

        Raises :class:`TopicNotFoundError` when the topic does not exist or has no
        partitions, and :class:`FollowerError` when the broker cannot be asked.
        Without this call, :meth:`start` waits for the topic in the background.
        """
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise FollowerError(self.topic, f"cannot read its metadata: {exc}") from exc
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            raise TopicNotFoundError(self.topic)
        partitions = sorted(found.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, self._start_offset(p, timeout_s))
                               for p in partitions])
        self._pending_ends = set(partitions)
        self.assigned.set()
        logger.info("%s.assigned topic=%s partitions=%d", self._log_as, self.topic,
                    len(partitions))

    def _start_offset(self, partition: int, timeout_s: float) -> int:
        """Where to read ``partition`` from: its beginning, or its end *now*.

        The end is asked for here rather than left to ``OFFSET_END``, which librdkafka
        resolves only at the first fetch: a record produced between :meth:`assign` and
        that fetch (a reply to a message sent as soon as the gateway said it was ready)
        would be skipped.
        """
        if self._from_beginning:
            return OFFSET_BEGINNING
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=timeout_s)
        except KafkaException as exc:
            raise FollowerError(self.topic, f"cannot read the end of partition {partition}: "
                                f"{exc}") from exc
        return int(high) if high >= 0 else OFFSET_END

    def start(self) -> None:
        """Start the background thread (which first waits for the topic, if unassigned)."""
        if self._thread is not None:
            raise RuntimeError("follower already started")
        self._thread = threading.Thread(target=self._run, name=f"follow:{self.topic}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and close the consumer (idempotent)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        elif not self._closed:  # never started: the consumer is closed here
            self._closed = True
            self._consumer.close()

    async def close(self) -> None:
        """:meth:`stop`, without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    # --- the thread ---------------------------------------------------------------

    def _wait_for_topic(self) -> None:
        while not self._stopping.is_set() and not self.assigned.is_set():
            try:
                self.assign(timeout_s=5)
            except (TopicNotFoundError, FollowerError) as exc:
                logger.warning("%s.metadata_failed error=%s", self._log_as, exc)
                self._stopping.wait(1)

    def _run(self) -> None:
        consumer = self._consumer
        try:
            self._wait_for_topic()
            while not self._stopping.is_set():
                # Block only until the first record, then take what is already there:
                # consume(n, timeout) alone would wait out the timeout for a full batch.
                first = consumer.poll(self._poll_timeout_s)
                if first is not None:
                    messages = [first, *consumer.consume(self._batch_size - 1, timeout=0)]
                    records = [msg for msg in messages if not self._is_error(msg)]
                    if records:
                        self._on_batch(records)
                if self._from_beginning and not self._pending_ends \
                        and not self.caught_up.is_set():
                    logger.info("%s.caught_up topic=%s", self._log_as, self.topic)
                    self.caught_up.set()
        except BaseException as exc:  # surfaced through .error: the thread must not die silently
            self._error = exc
            logger.exception("%s.stopped_on_error topic=%s", self._log_as, self.topic)
        finally:
            self._closed = True
            consumer.close()

    def _is_error(self, msg: Message) -> bool:
        """True for an event that is not a record; raises on a fatal one."""
        err = msg.error()
        if err is None:
            return False
        if err.code() == KafkaError._PARTITION_EOF:
            self._pending_ends.discard(msg.partition())
        elif err.fatal():
            raise FollowerError(self.topic, f"the consumer failed: {err.str()}")
        else:
            logger.warning("%s.consume_error error=%s", self._log_as, err.str())
        return True


class TableFollower:
    """Base of the followers that read a compacted topic as a table (``kb.documents``,
    ``bots``): every record from the beginning, in a :class:`TopicFollower`'s thread, and
    of each batch only the last record per key (compaction semantics) goes to
    :meth:`apply_latest`, which a subclass defines.

    :meth:`start` raises ``start_error`` (the subclass's error type) when the topic does
    not exist or the broker cannot say, before anything runs.
    """

    start_error: type[Exception] = FollowerError

    def __init__(self, bootstrap: str, topic: str, *, log_as: str, batch_size: int,
                 poll_timeout_s: float, config: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self._follower = TopicFollower(
            bootstrap, topic, self._apply_batch, from_beginning=True, batch_size=batch_size,
            poll_timeout_s=poll_timeout_s, log_as=log_as, config=config,
        )

    def start(self) -> None:
        """Assign every partition of the topic and start following it."""
        try:
            self._follower.assign()
        except FollowerError as exc:
            self._follower.stop()
            raise self.start_error(str(exc)) from exc
        self._follower.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop and close the consumer (idempotent)."""
        self._follower.stop(timeout_s)

    def wait_caught_up(self, timeout_s: float | None = None) -> bool:
        """True once every record present at start has been applied."""
        return self._follower.caught_up.wait(timeout_s)

    @property
    def error(self) -> BaseException | None:
        return self._follower.error

    def _apply_batch(self, records: list[Message]) -> None:
        latest: dict[bytes, Message] = {}
        for msg in records:  # compaction semantics: the last record per key wins
            latest[msg.key() or b""] = msg
        self.apply_latest(latest)

    def apply_latest(self, latest: dict[bytes, Message]) -> None:
        """Apply a batch's last record per key, on the follower's thread."""
        raise NotImplementedError
