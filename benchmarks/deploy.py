"""What a benchmark runs against: a pipeline stack, the inline baseline, or a URL.

Each deployment is a context manager yielding the WebSocket URLs to load and
the pids of every process worth measuring. A pipeline deployment is a
:class:`parley.stack.Stack` on a fresh data dir with a unique topic prefix and
consumer group; by default it also starts its own broker and Redis Cluster on
free ports, so it never disturbs a running dev stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil

from agents.dialogue.loader import load_bot
from agents.dialogue.training import resolve_nlu_model
from agents.knowledge.demo import resolve_kb_index as knowledge_index
from examples import DEMO
from gateway.tenants import TenantStore
from infra.broker import admin_client
from infra.embedded import CLUSTER_NODES
from infra.pidfile import read_pidfile
from infra.ports import find_free_ports, is_port_free
from infra.redis_cluster import BUS_PORT_OFFSET
from infra.topics import ensure_topics
from kernel.credentials import ensure_credentials
from kernel.errors import InfraError, PortInUseError
from kernel.settings import Settings
from parley.stack import Stack
from streams.state import connect_cluster
from streams.topics import all_topics, chat_partitions

__all__ = [
    "Deployment",
    "InfraMode",
    "external_deployment",
    "inline_deployment",
    "pipeline_deployment",
    "resolve_kb_index",
    "resolve_model_dir",
]

logger = logging.getLogger(__name__)

InfraMode = Literal["own", "running"]
_HOST = "127.0.0.1"
_PORT_ATTEMPTS = 3
# Conversation state of benchmark runs expires on its own, also on shared infrastructure.
_SESSION_TTL_S = 3600


@dataclass
class Deployment:
    """Where to send load, and which processes to measure."""

    kind: str  # "pipeline", "inline" or "external"
    ws_urls: list[str]
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid
    #: the stream workers' /metrics pages (benchmarks.stages reads them)
    worker_metrics_urls: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: The tenant API key the load generator's sessions authenticate with (empty: none).
    api_key: str = ""


def resolve_model_dir(model_dir: Path | None) -> Path:
    """The NLU model to serve: ``model_dir``, PARLEY_NLU_MODEL, or the cached demo model.

    The demo model is trained once into the dev data dir (``PARLEY_DATA_DIR/bots``,
    the cache ``parley up`` uses), not into each benchmark's fresh data dir.
    """
    if model_dir is not None:
        return model_dir.resolve()
    return resolve_nlu_model(Settings.from_env(), load_bot(DEMO.folder)).resolve()


def resolve_kb_index() -> Path | None:
    """The knowledge index workers serve: PARLEY_KB_INDEX, or the demo index cached in the
    dev data dir (built once); None when the knowledge agent is off (PARLEY_KNOWLEDGE)."""
    index = knowledge_index(Settings.from_env(), DEMO.knowledge)
    return None if index is None else index.resolve()


@contextlib.contextmanager
def _children_env(**values: str | None) -> Iterator[None]:
    """Environment for the processes started in this block (they inherit ``os.environ``)."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextlib.contextmanager
def _data_dir(parent: Path | None, keep: bool) -> Iterator[Path]:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="parley-bench-", dir=parent))
    try:
        yield path
    finally:
        if keep:
            logger.info("bench.data_dir.kept path=%s", path)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _free_infra_ports() -> tuple[int, int]:
    """A free Kafka port whose next port (the controller's) is free too, and a base port
    with free ports for the Redis nodes and their cluster buses."""
    nodes = range(CLUSTER_NODES)
    for _ in range(200):
        kafka_port = random.randrange(30000, 40000)
        base = random.randrange(20000, 30000)
        wanted = [kafka_port, kafka_port + 1]
        wanted += [base + i for i in nodes] + [base + BUS_PORT_OFFSET + i for i in nodes]
        if all(is_port_free(_HOST, p) for p in wanted):
            return kafka_port, base
    raise InfraError(f"found no {CLUSTER_NODES} consecutive free ports for a Redis Cluster "
                     "in 20000-30000")


def _infra_pids(data_dir: Path) -> dict[str, int]:
    recorded = read_pidfile(data_dir)
    if recorded is None:
        return {}
    return {
        ("broker" if record.name == "kafka-1" else record.name): record.pid
        for record, _ in recorded.live()
    }


def _delete_run_topics(settings: Settings) -> None:
    """Remove a run's prefixed topics from infrastructure it did not start (best effort)."""
    names = [spec.name for spec in all_topics(settings.chat_partitions, settings.topic_prefix)]
    admin = admin_client(settings.kafka_bootstrap)  # kept alive until the futures resolve
    try:
        futures = admin.delete_topics(names, request_timeout=10)
        for future in futures.values():
            future.result(timeout=15)
    except Exception as exc:  # cleanup must not hide the run's result or error
        logger.warning("bench.topics.not_deleted prefix=%s error=%s", settings.topic_prefix, exc)


def _start_infra(settings: Settings) -> Stack:
    """Start a Stack's own embedded infrastructure on free ports (retried on a port race)."""
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        kafka_port, redis_base = _free_infra_ports()
        stack = Stack(settings.replace(
            kafka_bootstrap=f"{_HOST}:{kafka_port}", redis_nodes=f"{_HOST}:{redis_base}",
        ))  # fmt: skip
        try:
            stack.start_infra()
            return stack
        except PortInUseError:
            if attempt == _PORT_ATTEMPTS:
                raise
            logger.warning("bench.infra.port_taken attempt=%d", attempt)
    raise AssertionError("unreachable")


#: A user's rate limit no benchmark reaches: a million messages a minute, all at once.
_NO_LIMIT = "1000000:1000000"


@contextlib.contextmanager
def pipeline_deployment(
    *,
    gateways: int = 1,
    workers: int = 1,
    infra: InfraMode = "own",
    model_dir: Path | None = None,
    data_parent: Path | None = None,
    partitions: int | None = None,
    keep_data: bool = False,
    ready_timeout: float = 120,
    rate_limits: bool = False,
) -> Iterator[Deployment]:
    """Gateways and workers (and by default a broker and Redis Cluster) for one run.

    ``gateways=0`` starts workers only (``parley bench worker`` feeds them itself).
    The load benchmarks send each conversation's messages faster than one user of any
    tier may, so the users' and tenants' rate limits are lifted (:data:`_NO_LIMIT`)
    unless ``rate_limits`` (the fairness benchmark measures them).

    ``infra="running"`` uses the broker and cluster named by PARLEY_KAFKA_BOOTSTRAP
    and PARLEY_REDIS_NODES instead of starting them; the run's topics get a
    unique prefix either way, are deleted afterwards on running infrastructure,
    and its conversation state expires after an hour.
    """
    if gateways < 0 or workers < 1:
        raise ValueError("a pipeline needs at least one worker (and no negative gateways)")
    model = resolve_model_dir(model_dir)
    kb_index = resolve_kb_index()
    run_id = uuid.uuid4().hex[:8]
    with (
        _children_env(PARLEY_KB_INDEX=None if kb_index is None else str(kb_index)),
        _data_dir(data_parent, keep_data) as data_dir,
        contextlib.ExitStack() as own_env,
    ):
        base = Settings.from_env()
        if infra == "own":  # this process's clients (not only the children) use its users
            credentials = ensure_credentials(data_dir)
            own_env.enter_context(_children_env(**credentials.client_env()))
            base = base.replace(**{name.lower().removeprefix("parley_"): value
                                   for name, value in credentials.client_env().items()})
        settings = base.replace(
            data_dir=data_dir,
            topic_prefix=f"bench{run_id}.",
            consumer_group=f"bench{run_id}.workers",
            session_ttl_s=_SESSION_TTL_S,
            nlu_model_dir=str(model),
            # A count, never 0: the run reports it and readers follow that many partitions.
            chat_partitions=chat_partitions(partitions or base.chat_partitions),
        )
        if not rate_limits:
            settings = settings.replace(rate_default=_NO_LIMIT, rate_authenticated=_NO_LIMIT,
                                        rate_premium=_NO_LIMIT, rate_tenant="off")
        stack: Stack | None = None
        try:
            if infra == "own":
                stack = _start_infra(settings)
                infra_pids = _infra_pids(data_dir)
            else:
                stack = Stack(settings)
                ensure_topics(
                    settings.kafka_bootstrap,
                    all_topics(settings.chat_partitions, settings.topic_prefix),
                )
                infra_pids = _infra_pids(base.data_dir)
            stack.prepare_model()
            stack.start_crm(port=0)  # the demo bot's actions call it, as under `parley up`
            ports = find_free_ports(gateways + workers, _HOST)
            gw = [
                stack.start_gateway(port, name=f"gateway-{i}")
                for i, port in enumerate(ports[:gateways])
            ]
            wk = [
                stack.start_worker(port, name=f"worker-{i}")
                for i, port in enumerate(ports[gateways:])
            ]
            stack.wait_ready(timeout=ready_timeout)
            yield Deployment(
                kind="pipeline",
                api_key=_bench_api_key(stack) if gateways else "",
                ws_urls=[f"ws://{_HOST}:{port}/ws" for port in ports[:gateways]],
                processes={**{c.name: c.pid for c in [*gw, *wk]}, **infra_pids},
                worker_metrics_urls=[f"http://{_HOST}:{port}/metrics" for port in ports[gateways:]],
                details={
                    "gateways": gateways,
                    "workers": workers,
                    "infra": infra,
                    "partitions": stack.settings.chat_partitions,
                    "topic_prefix": stack.settings.topic_prefix,
                    "kafka_bootstrap": stack.settings.kafka_bootstrap,
                    "redis_nodes": stack.settings.redis_nodes,
                    "data_dir": str(data_dir),
                    "model_dir": str(model),
                    "kb_index": None if kb_index is None else str(kb_index),
                },
            )
        finally:
            if stack is not None:
                stack.stop()
                if infra == "running":
                    _delete_run_topics(stack.settings)


@contextlib.contextmanager
def inline_deployment(
    *,
    model_dir: Path | None = None,
    data_parent: Path | None = None,
    keep_data: bool = False,
    ready_timeout: float = 120,
) -> Iterator[Deployment]:
    """The inline baseline (benchmarks/inline.py) in its own process."""
    model = resolve_model_dir(model_dir)
    kb_index = resolve_kb_index()
    with (
        _children_env(PARLEY_KB_INDEX=None if kb_index is None else str(kb_index)),
        _data_dir(data_parent, keep_data) as data_dir,
    ):
        port = find_free_ports(1, _HOST)[0]
        settings = Settings.from_env().replace(data_dir=data_dir, nlu_model_dir=str(model))
        stack = Stack(settings)
        child = stack.spawn(
            "inline", ["--host", _HOST, "--port", str(port), "--model-dir", str(model)],
            f"http://{_HOST}:{port}/readyz", {}, module="benchmarks.inline",
        )
        try:
            stack.wait_ready(timeout=ready_timeout)
            yield Deployment(
                kind="inline",
                ws_urls=[f"ws://{_HOST}:{port}/ws"],
                processes={"inline": child.pid},
                details={
                    "model_dir": str(model),
                    "kb_index": None if kb_index is None else str(kb_index),
                    "data_dir": str(data_dir),
                },
            )
        finally:
            stack.stop()


def _bench_api_key(stack: Stack) -> str:
    """A new API key of the development tenant (the demo's, created if missing) for the
    load generator: each of its sessions speaks for a user of its own."""
    stack.ensure_dev_tenant([])

    async def create() -> str:
        redis = connect_cluster(stack.settings.redis_startup_nodes)
        try:
            return (await TenantStore(redis).create_api_key(stack.settings.dev_tenant)).key
        finally:
            await redis.aclose()

    return asyncio.run(create())


@contextlib.contextmanager
def external_deployment(url: str) -> Iterator[Deployment]:
    """An already running gateway; its process is measured if it runs on this machine.
    Sessions authenticate with the tenant API key in PARLEY_BENCH_API_KEY
    (`parley tenant key create demo`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"--url must be a ws:// or wss:// URL, got {url!r}")
    ws_url = url if parts.path else f"{url.rstrip('/')}/ws"
    processes = {}
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    pid = _listening_pid(port)
    if pid is not None:
        processes["gateway"] = pid
    yield Deployment(
        kind="external", ws_urls=[ws_url], processes=processes, details={"url": ws_url},
        api_key=os.environ.get("PARLEY_BENCH_API_KEY", ""),
    )


def _listening_pid(port: int) -> int | None:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except psutil.AccessDenied:
        return None
    return None
