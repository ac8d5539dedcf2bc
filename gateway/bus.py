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

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.errors import BusError
from streams.follow import TopicFollower
from streams.security import KafkaCredentials, bootstrap_config, sasl_config
from streams.topics import producer_compression

__all__ = ["DeliveryError", "InboundProducer", "ReplyFollower"]

logger = logging.getLogger(__name__)


class DeliveryError(BusError):
    """The broker did not confirm an event (after the producer's own retries).

    ``possibly_written`` is true when the producer gave up waiting for the broker's
    answer (``delivery.timeout.ms``) with the event already sent: the broker may hold
    it, so it may still be processed, and a resend may be processed twice.
    """

    def __init__(self, reason: str, *, possibly_written: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.possibly_written = possibly_written

    def __str__(self) -> str:
        if self.possibly_written:
            return f"the broker did not confirm the event in time: {self.reason}"
        return f"the broker did not take the event: {self.reason}"


#: Delivery errors after which a producer never delivers again (see InboundProducer).
_FENCED = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                     KafkaError._FENCED})


class InboundProducer:
    """Idempotent, acks=all producer; :meth:`send` resolves once the broker holds the event.

    librdkafka waits ``linger_ms`` for other messages to share a produce request.

    A producer that is fenced or fails fatally is unusable for good. A broker may fence
    an idempotent producer whose requests timed out during an outage (Tansu, the
    embedded broker before Kafka, did: every later delivery failed with
    PRODUCER_FENCED, which librdkafka does not flag as fatal), so either makes this one
    replace its producer with a new one: the gateway takes
    messages again once the broker is back. Events the old one still held fail with
    :class:`DeliveryError` (the client is told to retry).

    It authenticates as ``credentials`` (None: as this process does, streams/security.py).
    """

    def __init__(self, bootstrap: str, *, linger_ms: float, client_id: str = "parley-gateway",
                 credentials: KafkaCredentials | None = None):
        self._config: dict[str, Any] = {
            **bootstrap_config(bootstrap, credentials),
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
            timed_out = err.code() == KafkaError._MSG_TIMED_OUT
            future.set_exception(DeliveryError(err.str(), possibly_written=timed_out))


class ReplyFollower:
    """Reads every partition of the reply topic from its end, without a consumer group
    (:class:`streams.follow.TopicFollower`).

    Each gateway sees every reply and delivers those whose conversation has a socket
    here; there is no group to join or rebalance, so a gateway is ready in
    milliseconds and any number of gateways can run side by side. Replies produced
    while no gateway held the socket are recovered from the outbox on resume.
    ``on_batch`` gets the replies' values on the event loop, one call per poll. It
    authenticates as ``credentials`` (None: as this process does, streams/security.py).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_batch: Callable[[list[bytes]], None],
        *,
        batch_size: int = 500,
        fetch_wait_ms: int = 10,
        credentials: KafkaCredentials | None = None,
    ) -> None:
        self._on_batch = on_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._follower = TopicFollower(
            bootstrap, topic, self._hand_over, from_beginning=False, batch_size=batch_size,
            log_as="gateway.replies",
            config={"fetch.wait.max.ms": fetch_wait_ms, **sasl_config(credentials)},
        )
        #: Set once every partition of the reply topic is assigned.
        self.assigned = self._follower.assigned

    def start(self) -> None:
        """Start following (on the event loop that is to get the replies)."""
        self._loop = asyncio.get_running_loop()
        self._follower.start()

    def _hand_over(self, records: list[Message]) -> None:
        """On the follower's thread: pass a batch's values to the loop, in one call."""
        values = [value for msg in records if (value := msg.value()) is not None]
        if values and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_batch, values)

    async def close(self) -> None:
        await self._follower.close()
