"""Faust's Kafka transport, with a configurable fetch long-poll and a cheaper fetch loop.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumers; this transport lets
``PARLEY_FETCH_MAX_WAIT_MS`` decide (via ``ParleyApp.fetch_max_wait_ms``), as the
gateways' reply followers do. Kafka answers a waiting fetch as soon as data
arrives, so the wait bounds only how often an idle worker wakes up. It is
registered under the URL scheme ``parley-kafka://``.

Faust's fetch loop hands each record to the streams under ``wait_first(callback,
suspend_flow.wait())``, so that a rebalance can interrupt a delivery blocked on a
full stream buffer. That makes four tasks and cancels three for every record.
``_Consumer`` races the suspension once per fetch instead: on Kafka 4.4 a worker
spent 0.16-0.18 ms of CPU a message with it against 0.25-0.27 with Faust's own
loop (``parley bench worker``, two alternating pairs; docs/infra.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
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

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``), one race per fetch.

        Records are fetched as Faust fetches them (``getmany`` is never interrupted:
        records it takes from the client while flow is stopped make it seek back to
        the committed offsets). Then one task delivers them all, raced against flow
        suspension (a rebalance); when suspended, the rest of the fetch is dropped,
        as Faust's own loop drops it, and read again from the committed offsets.
        Written against faust-streaming 0.15 (pinned in pyproject.toml): re-read
        Faust's loop when upgrading. ``tests/e2e/test_worker_crash.py`` moves
        partitions between workers mid-stream and checks nothing is lost.
        """
        fetcher_stopped = fetcher._stopped.is_set
        stopped_errors: tuple[type[BaseException], ...] = (*self.consumer_stopped_errors,
                                                           asyncio.CancelledError)
        try:
            while not (self._stopped.is_set() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = [record async for record in self.getmany(timeout=1.0)]
                await self.sleep(0)
                if fetched and not self.should_stop:
                    await self.wait_first(self._deliver(fetched), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except stopped_errors:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, fetched: list[tuple[Any, Any]]) -> None:
        """Faust's per-record steps: skip what was read already, record offset gaps,
        commit every ``broker_commit_every`` acks, hand the record to the streams."""
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        for i, (tp, message) in enumerate(fetched, 1):
            if i % 100 == 0:  # let the loop breathe during a large fetch
                await asyncio.sleep(0)
            offset, last = message.offset, read_offset[tp]
            if last is not None and offset < last:
                continue
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await callback(message)
            read_offset[tp] = offset


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
