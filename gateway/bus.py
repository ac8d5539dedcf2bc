"""The gateway's side of the bus: producing inbound events, following replies.

confluent-kafka is a blocking C client; each piece here owns one background
thread that polls it and hands results to the event loop in batches (one
``call_soon_threadsafe`` per poll, not per message), so the loop never blocks
on the broker.

A busy gateway hands its messages to the producer in bursts, every few tens of
milliseconds (gateway/sequences.py), so librdkafka's short linger is enough to
put each burst in one produce request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from streams.topics import producer_compression

__all__ = ["DeliveryError", "InboundProducer", "ReplyFollower"]

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The broker did not accept an event (after the producer's own retries)."""


#: Delivery errors after which a producer never delivers again (see InboundProducer).
_FENCED = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                     KafkaError._FENCED})


class InboundProducer:
    """Idempotent, acks=all producer; :meth:`send` resolves once the broker holds the event.

    librdkafka waits ``linger_ms`` for other messages to share a produce request.

    A producer that is fenced or fails fatally is unusable for good. Tansu fences an
    idempotent producer whose requests timed out during an outage (every later
    delivery fails with PRODUCER_FENCED, which librdkafka does not flag as fatal), so
    either makes this one replace its producer with a new one: the gateway takes
    messages again once the broker is back. Events the old one still held fail with
    :class:`DeliveryError` (the client is told to retry).
    """

    def __init__(self, bootstrap: str, *, linger_ms: float, client_id: str = "parley-gateway"):
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": producer_compression(),
            # Kafka's standard key hash (the Java client's, and aiokafka's in the workers):
            # every producer puts a conversation on the same partition.
            "partitioner": "murmur2_random",
            "delivery.timeout.ms": 10_000,
            "socket.keepalive.enable": True,
            "error_cb": self._on_error,
        }
        self._producer = Producer(self._config)
        self._producer_lock = threading.Lock()  # send() on the loop, replacement on the thread
        self._fatal: KafkaError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[tuple[asyncio.Future[int], KafkaError | None, int]] = []
        self._done_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def send(self, topic: str, key: str, value: bytes) -> asyncio.Future[int]:
        """Queue an event; the future resolves to its partition once the broker holds it.

        Events sent in order for one key are written in that order (idempotent producer).
        """
        loop = self._loop
        assert loop is not None, "start() first"
        future: asyncio.Future[int] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None and err.code() in _FENCED:
                self._fatal = err
            with self._done_lock:
                self._done.append((future, err, msg.partition()))

        try:
            with self._producer_lock:
                try:
                    self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                except BufferError:
                    # Local queue full: give the broker a moment to drain it, then retry once.
                    self._producer.poll(0.1)
                    self._producer.produce(topic, value=value, key=key,
                                           on_delivery=on_delivery)
        except (BufferError, KafkaException) as exc:
            future.set_exception(DeliveryError(f"not queued: {exc}"))
        return future

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (on the poll thread)."""
        if err.fatal():
            self._fatal = err
        else:
            logger.debug("gateway.producer.error error=%s", err.str())

    def _poll(self) -> None:
        while not self._stopping.is_set():
            # Returns as soon as delivery reports are served; the timeout only bounds
            # how long an idle gateway sleeps (and how long close() waits).
            self._producer.poll(0.1)
            if self._fatal is not None:
                self._replace_producer()
            self._hand_over()
        self._producer.flush(5)
        self._hand_over()

    def _replace_producer(self) -> None:
        logger.warning("gateway.producer.replaced error=%s", self._fatal and self._fatal.str())
        with self._producer_lock:
            old, self._producer = self._producer, Producer(self._config)
        old.purge()  # what it still held fails now, through its delivery reports
        old.flush(1)
        self._fatal = None  # after the old one's last reports, which may repeat the error

    def _hand_over(self) -> None:
        """Resolve the futures of delivered events on the loop, one call per batch."""
        with self._done_lock:
            done, self._done = self._done, []
        if done and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_resolve, done)

    def connected(self, timeout: float = 2) -> bool:
        try:
            self._producer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    async def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10)


def _resolve(done: list[tuple[asyncio.Future[int], KafkaError | None, int]]) -> None:
    for future, err, partition in done:
        if future.done():
            continue
        if err is None:
            future.set_result(partition)
        else:
            future.set_exception(DeliveryError(err.str()))


class ReplyFollower:
    """Reads every partition of the reply topic from its end, without a consumer group.

    Each gateway sees every reply and delivers those whose conversation has a socket
    here; there is no group to join or rebalance, so a gateway is ready in
    milliseconds and any number of gateways can run side by side. Replies produced
    while no gateway held the socket are recovered from the outbox on resume.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_batch: Callable[[list[bytes]], None],
        *,
        batch_size: int = 500,
        fetch_wait_ms: int = 10,
    ) -> None:
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "parley-gateway-unused",   # required by the client, never joined
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
            "socket.keepalive.enable": True,
        })  # fmt: skip
        self._topic = topic
        self._on_batch = on_batch
        self._batch_size = batch_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self.assigned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-reply-follower", daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def _assign(self) -> None:
        while not self._stopping.is_set():
            try:
                meta = self._consumer.list_topics(self._topic, timeout=5)
                partitions = meta.topics[self._topic].partitions
                if partitions:
                    self._consumer.assign(
                        [TopicPartition(self._topic, p, OFFSET_END) for p in partitions]
                    )
                    self.assigned.set()
                    logger.info("gateway.replies.assigned topic=%s partitions=%d",
                                self._topic, len(partitions))
                    return
            except KafkaException as exc:
                logger.warning("gateway.replies.metadata_failed error=%s", exc)
            self._stopping.wait(1)

    def _run(self) -> None:
        self._assign()
        while not self._stopping.is_set():
            # Block only until the first message, then take what is already there:
            # consume(n, timeout) alone would wait out the timeout for a full batch.
            first = self._consumer.poll(0.1)
            if first is None:
                continue
            messages = [first, *self._consumer.consume(self._batch_size - 1, timeout=0)]
            values = []
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        logger.warning("gateway.replies.consume_error error=%s", err.str())
                    continue
                value = msg.value()
                if value is not None:
                    values.append(value)
            if values and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._on_batch, values)
        self._consumer.close()

    async def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10)
