"""The Faust application every worker runs.

``create_app`` builds a configured ``faust.App`` and the raw-bytes topics; the
agents (agents/*/agent.py) register themselves on it. Values stay bytes at the
Faust layer and are decoded by Parley's Avro codecs inside the agents, so an
event that cannot be processed can be routed to its dead-letter topic with the
original bytes instead of crashing the stream (``DeadLetters``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TopicT
from faust.web.drivers import DRIVERS as WEB_DRIVERS
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from kernel.runtime import collect_young_less_often, freeze_startup_objects, observe_gc_pauses
from kernel.settings import Settings
from streams import transport
from streams.batching import process_until_done
from streams.codecs import AvroCodec, codec_for
from streams.dead_letters import dead_letter_headers
from streams.metrics import (
    EVENTS_DEAD_LETTER_FAILED,
    EVENTS_DEAD_LETTERED,
    EVENTS_PRODUCED,
    setup_worker_metrics,
)
from streams.security import (
    SCRAM_MECHANISM,
    KafkaCredentials,
    kafka_credentials,
    redis_credentials,
)
from streams.state import ConversationStore, connect_cluster
from streams.topics import (
    ACTIONS_REQUESTS,
    ACTIONS_RESULTS,
    CHAT_INBOUND,
    CHAT_OUTBOUND,
    CHAT_UNDERSTOOD,
    HANDOFF_EVENTS,
    KNOWLEDGE_REQUESTS,
    KNOWLEDGE_RESULTS,
    chat_partitions,
    dlq_of,
    producer_compression,
)
from streams.usage import UsageCounter

__all__ = ["WEB_SCHEME", "DeadLetters", "ParleyApp", "ProbesOnlyWeb", "WorkerContext",
           "create_app", "faust_credentials", "produce", "raw_topic", "send", "send_to_dlq"]

logger = logging.getLogger(__name__)


class ProbesOnlyWeb(AiohttpWeb):
    """Faust's aiohttp web server without any of Faust's own views.

    Faust serves ``/router/`` (which worker holds a key), ``/table/`` (every table's
    content), ``/`` (a status page) and, in debug mode, ``/graph/`` and statistics.
    A worker's port serves what an orchestrator and Prometheus need, ``/healthz``,
    ``/readyz`` and ``/metrics`` (the app's own pages), and answers 404 to anything
    else: it has nothing to tell anyone else, and tables would leak conversations.
    Cleared here, each list of Faust's views is empty whatever settings Faust adds.
    """

    default_blueprints = []
    production_blueprints = []
    debug_blueprints = []
    optional_blueprints = []


#: The URL scheme of :class:`ProbesOnlyWeb` in Faust's web driver registry (``web=``).
WEB_SCHEME = "parley-web"
WEB_DRIVERS.aliases[WEB_SCHEME] = f"{__name__}:ProbesOnlyWeb"


class ParleyApp(faust.App):
    """A Faust app that carries the consumer fetch wait (see streams/transport.py) and
    closes shared clients only after its agents have stopped."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.closers: list[Callable[[], Awaitable[None]]] = []
        #: What else must hold for ``/readyz`` (e.g. a background follower still running).
        self.ready_checks: list[Callable[[], bool]] = []

    async def on_started(self) -> None:
        """Once agents and models are up, keep the collector off them, and off what a
        batch allocates (see kernel.runtime)."""
        await super().on_started()
        freeze_startup_objects()
        collect_young_less_often()
        observe_gc_pauses()

    async def on_shutdown(self) -> None:
        """After agents and the consumer stopped: close what agents used, newest first."""
        await super().on_shutdown()
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                logger.exception("worker.shutdown.close_failed")


@dataclass
class WorkerContext:
    """What agents share inside one worker process."""

    settings: Settings
    app: ParleyApp
    inbound: TopicT
    understood: TopicT
    outbound: TopicT
    knowledge_requests: TopicT
    knowledge_results: TopicT
    actions_requests: TopicT
    actions_results: TopicT
    store: ConversationStore
    #: Human handoff's requests, outcomes and the agent console's commands.
    handoff_events: TopicT
    #: Where an event goes that cannot be processed (streams/dead_letters.py).
    dead_letters: DeadLetters = field(init=False)
    #: The tenants' usage counters for billing (streams/usage.py): knowledge requests and
    #: LLM tokens, counted in process and flushed to Redis once a second.
    usage: UsageCounter = field(init=False)

    def __post_init__(self) -> None:
        self.dead_letters = DeadLetters(self.app)
        self.usage = UsageCounter(self.store.redis, component="worker")

    def codec(self, name: str, topic: TopicT) -> AvroCodec:
        return codec_for(name, self.settings.schema_registry_url, topic.get_topic_name())


def raw_topic(app: faust.App, *names: str) -> TopicT:
    """A topic whose keys and values stay bytes (several names: read as one stream)."""
    return app.topic(*names, key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")  # fmt: skip


def faust_credentials(credentials: KafkaCredentials | None) -> faust.SASLCredentials | None:
    """Faust's ``broker_credentials`` for ``credentials`` (it hands them to aiokafka)."""
    if credentials is None:
        return None
    return faust.SASLCredentials(username=credentials.username, password=credentials.password,
                                 mechanism=SCRAM_MECHANISM)


def create_app(settings: Settings) -> WorkerContext:
    scratch = settings.data_dir / "faust"  # Faust's own folder; it holds no state here
    scratch.mkdir(parents=True, exist_ok=True)
    codec = producer_compression()
    app = ParleyApp(
        settings.consumer_group,
        broker=[f"{transport.SCHEME}://{hp}" for hp in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka_credentials(settings)),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        store="memory://",
        datadir=str(scratch / "{conf.name}"),
        web_port=settings.worker_web_port,
        web_host=settings.worker_web_host,
        web_bind=settings.worker_web_host,
        web_enabled=True,
        web=f"{WEB_SCHEME}://",  # probes and metrics only (ProbesOnlyWeb)
        topic_partitions=chat_partitions(settings.chat_partitions),
        topic_allow_declare=False,   # topics are created by `parley infra up` / ops
        topic_disable_leader=True,
        producer_acks=-1,
        producer_compression_type=None if codec == "none" else codec,  # aiokafka's "none"
        consumer_auto_offset_reset="earliest",
        # Fast group joins on a small broker: ready in ~4 s instead of ~30 s with the defaults.
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        broker_max_poll_interval=10,
        broker_commit_every=500,
        broker_commit_interval=0.5,
    )

    def topic(name: str) -> TopicT:
        return raw_topic(app, settings.topic(name))

    redis = connect_cluster(settings.redis_startup_nodes, credentials=redis_credentials(settings))
    ctx = WorkerContext(
        settings=settings,
        app=app,
        inbound=topic(CHAT_INBOUND),
        understood=topic(CHAT_UNDERSTOOD),
        outbound=topic(CHAT_OUTBOUND),
        knowledge_requests=topic(KNOWLEDGE_REQUESTS),
        knowledge_results=topic(KNOWLEDGE_RESULTS),
        actions_requests=topic(ACTIONS_REQUESTS),
        actions_results=topic(ACTIONS_RESULTS),
        store=ConversationStore(redis, ttl_s=settings.session_ttl_s),
        handoff_events=topic(HANDOFF_EVENTS),
    )
    _register_probes(ctx)
    _register_usage_flush(ctx)
    return ctx


def _register_usage_flush(ctx: WorkerContext, every_s: float = 1.0) -> None:
    """Add the usage this worker counted to Redis every ``every_s`` (on every worker, not
    only the leader: each flushes its own counts), and what is left at shutdown, before
    the Redis client closes (closers run newest first)."""

    @ctx.app.timer(every_s, name=f"{ctx.settings.topic_prefix}usage_flush", on_leader=False)
    async def flush_usage() -> None:
        await ctx.usage.flush()  # logs and keeps its counts when Redis fails

    ctx.app.closers.append(ctx.usage.close)


def _register_probes(ctx: WorkerContext) -> None:
    app = ctx.app
    setup_worker_metrics(app)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.text("ok\n")

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        ready = (assigned and not app.rebalancing and all(check() for check in app.ready_checks)
                 and await ctx.store.ping())
        return web.text("ready\n" if ready else "not ready\n", status=200 if ready else 503)

    app.closers.append(ctx.store.redis.aclose)


async def send(topic: TopicT, records: Sequence[tuple[bytes | None, bytes]]
               ) -> asyncio.Future[Any]:
    """Hand ``(key, value)`` records to the producer, in order; the returned future
    completes once the broker holds them all (and raises if it refused any).

    The records go to the aiokafka producer under Faust's as one batch per partition,
    partitioned by key as its ``send`` would (Kafka's murmur2, as the gateway's
    librdkafka is configured too): a record at a time through ``Topic.send`` cost a
    tenth of a busy worker's time, and through the producer's ``send`` 30 µs each.
    Await the result before the events that caused the records are acknowledged.
    """
    name = topic.get_topic_name()
    producer: AIOKafkaProducer = topic.app.producer._ensure_producer()  # type: ignore[attr-defined]
    await producer.client._wait_on_metadata(name)
    partition_of = _partitioner(producer, name)
    batches: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for key, value in records:
        partition = partition_of(key)
        batch = batches.get(partition)
        if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
            continue
        if batch is not None:  # full: send it, and start the partition's next one
            futures.append(await producer.send_batch(batch, name, partition=partition))
        batch = batches[partition] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            raise ValueError(f"a record of {len(value)} bytes does not fit a batch")
    for partition, batch in batches.items():
        futures.append(await producer.send_batch(batch, name, partition=partition))
    delivered = asyncio.gather(*futures)
    delivered.add_done_callback(functools.partial(_count_produced, name, len(records)))
    return delivered


#: Key → partition, per topic and list of partitions: the producer's partitioner is
#: murmur2 in pure Python (5-10 µs a key), and a conversation's key comes back every turn.
_KNOWN_PARTITIONS: dict[tuple[str, tuple[int, ...]], dict[bytes, int]] = {}


def _partitioner(producer: AIOKafkaProducer, topic: str) -> Callable[[bytes | None], int]:
    """``topic``'s key → partition, as the producer's own partitioner decides it. A record
    without a key goes to a random partition, as with the producer's ``send``."""
    cluster = producer.client.cluster
    partitions = sorted(cluster.partitions_for_topic(topic) or ())
    known = _KNOWN_PARTITIONS.setdefault((topic, tuple(partitions)), {})
    choose = producer._partitioner

    def partition_of(key: bytes | None) -> int:
        if key is not None and (partition := known.get(key)) is not None:
            return partition
        available = list(cluster.available_partitions_for_topic(topic) or ())
        partition = choose(key, partitions, available)
        if key is not None:
            if len(known) >= 100_000:
                known.clear()
            known[key] = partition
        return partition

    return partition_of


async def produce(topic: TopicT, records: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Send ``(key, value)`` records in order; return once the broker holds them all."""
    if records:
        await (await send(topic, records))


def _count_produced(name: str, count: int, delivered: asyncio.Future[Any]) -> None:
    # Also marks a failure as retrieved: the caller that awaits it still gets it, and
    # one that gave up on the batch (an exception of its own) leaves no warning behind.
    if not delivered.cancelled() and delivered.exception() is None:
        EVENTS_PRODUCED.labels(name).inc(count)


async def send_to_dlq(dlq: TopicT, event: Any, error: BaseException,
                      consumer: str = "") -> None:
    """Forward an event's original bytes to its dead-letter topic, with why and whence
    (headers: streams/dead_letters.py); return once the broker holds it."""
    message = event.message
    headers = dead_letter_headers(message, error, consumer)
    future = await dlq.send(key=message.key, value=message.value, headers=headers)
    await future
    EVENTS_DEAD_LETTERED.labels(message.topic).inc()
    logger.warning(
        "stream.event.dead_lettered topic=%s partition=%s offset=%s consumer=%s error=%r",
        message.topic, message.partition, message.offset, consumer, error,
    )  # fmt: skip


class DeadLetters:
    """Sends an event to the dead-letter topic of the topic it came from
    (``<topic>.dlq``, declared with the others: streams/topics.py).

    While the broker is unavailable, sending is tried again until it succeeds, as a
    batch is: the event stays unacknowledged meanwhile. A dead letter the broker
    refuses for itself is logged with its origin (and counted), never raised: that
    would stop the agent, which is what dead-lettering is for avoiding.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._topics: dict[str, TopicT] = {}

    def topic_for(self, source: str) -> TopicT:
        if (topic := self._topics.get(source)) is None:
            topic = self._topics[source] = raw_topic(self._app, dlq_of(source))
        return topic

    async def send(self, event: Any, error: BaseException, consumer: str) -> None:
        dlq = self.topic_for(event.message.topic)
        try:
            await process_until_done(
                functools.partial(send_to_dlq, dlq, event, error, consumer), "dead_letters")
        except Exception:
            message = event.message
            EVENTS_DEAD_LETTER_FAILED.labels(message.topic).inc()
            logger.exception(
                "stream.event.dead_letter_failed topic=%s partition=%s offset=%s error=%r",
                message.topic, message.partition, message.offset, error,
            )  # fmt: skip
