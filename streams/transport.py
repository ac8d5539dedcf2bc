"""Faust's Kafka transport with a configurable fetch long-poll.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumers. That is harmless
on Apache Kafka, which answers a waiting fetch as soon as data arrives, but the
embedded Tansu broker holds a fetch for its full wait even when data arrives
(measured: 115 ms median hop latency at 500 ms, 2 ms at 10 ms). This transport
lets ``PARLEY_FETCH_MAX_WAIT_MS`` decide
(via ``ParleyApp.fetch_max_wait_ms``); it is registered under the URL scheme
``parley-kafka://``.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["SCHEME", "Transport"]

SCHEME = "parley-kafka"


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when it builds its fetcher in start(), after this returns.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
