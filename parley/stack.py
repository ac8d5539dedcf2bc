"""A whole Parley deployment on one machine, as real processes.

``Stack`` starts the embedded infrastructure (or uses one already running),
creates the topics, makes sure an NLU model exists, then runs gateways and
workers as child processes (``python -m parley gateway|worker``) configured
through ``PARLEY_*`` environment variables, and waits for their ``/readyz``.
``parley up``, the end-to-end tests and the benchmarks all use it, so they
exercise exactly what a user runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agents.dialogue.loader import load_bot
from agents.dialogue.training import resolve_nlu_model
from agents.knowledge.demo import resolve_kb_index
from examples import bot_files
from gateway.tenants import Branding, TenantConfig, TenantStore, tenant_config
from infra.crm.settings import CrmSettings
from infra.embedded import CLUSTER_NODES, EmbeddedInfra
from infra.ports import check_ports_free, find_free_ports
from infra.process import DEFAULT_GRACE, log_tail
from infra.topics import ensure_topics
from kernel.errors import InfraError
from kernel.settings import Settings
from streams.security import kafka_credentials
from streams.state import connect_cluster
from streams.topics import all_topics

__all__ = ["ChildProcess", "Stack"]

logger = logging.getLogger(__name__)


@dataclass
class ChildProcess:
    """A gateway or worker process and where to ask whether it is ready."""

    name: str
    popen: subprocess.Popen[bytes]
    ready_url: str
    log_path: Path
    #: ``python -m <argv...>`` and the environment it was started with (to restart it).
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        """Its HTTP root, e.g. the chat page of a gateway."""
        return self.ready_url.removesuffix("readyz")

    @property
    def api_url(self) -> str | None:
        """A gateway's second HTTP root (webhooks, the agent console at ``console``), from
        the ``--api-port`` it was started with; None for a worker."""
        if "--api-port" not in self.argv[:-1]:
            return None
        port = self.argv[self.argv.index("--api-port") + 1]
        return f"http://{urlsplit(self.ready_url).hostname}:{port}/"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; idempotent."""
        self.terminate()
        self.wait_or_kill(time.monotonic() + grace)

    def terminate(self) -> None:
        """SIGTERM: finish what is in hand and exit (see :meth:`wait_or_kill`)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for the exit until ``deadline`` (monotonic clock), then SIGKILL."""
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("stack.process.killed name=%s", self.name)
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        """SIGKILL: no chance to commit, flush or say goodbye (crash tests)."""
        if self.alive():
            self.popen.kill()
            self.popen.wait()


@dataclass
class Stack:
    settings: Settings
    infra_owned: bool = False
    children: list[ChildProcess] = field(default_factory=list)
    model_dir: Path | None = None
    kb_index: Path | None = None
    #: What workers' integrations need to reach the CRM (:meth:`start_crm`).
    crm_env: dict[str, str] = field(default_factory=dict)
    #: What gateways need to take the CRM's callbacks (its secret: gateway/callbacks.py).
    gateway_env: dict[str, str] = field(default_factory=dict)
    #: Where workers' actions tell backends to call back: the first gateway's API port.
    callback_env: dict[str, str] = field(default_factory=dict)
    _infra: EmbeddedInfra | None = None

    # -- infrastructure ------------------------------------------------------

    def start_infra(self) -> None:
        """Start the embedded broker and Redis Cluster, unless they already answer."""
        infra = EmbeddedInfra.from_pidfile(self.settings.data_dir)
        if infra is not None and infra.status()["up"]:
            logger.info("stack.infra.reused data_dir=%s", self.settings.data_dir)
        else:
            (_, redis_port), *_ = self.settings.redis_startup_nodes
            infra = EmbeddedInfra(
                self.settings.data_dir,
                kafka_port=self.settings.kafka_port,
                redis_ports=range(redis_port, redis_port + CLUSTER_NODES),
            )
            infra.start()
            self._infra, self.infra_owned = infra, True
        # Addresses and credentials (generated into the data dir the first time): the
        # children get them in their environment (Settings.to_env).
        self.settings = self.settings.replace(**infra.client_settings())
        ensure_topics(
            self.settings.kafka_bootstrap,
            all_topics(self.settings.chat_partitions, self.settings.topic_prefix,
                       brokers=infra.brokers),
            credentials=kafka_credentials(self.settings),
        )

    def prepare_model(self) -> Path:
        """The NLU model workers serve; the demo model is trained once and cached."""
        bot = load_bot(bot_files(self.settings.bot_dir).folder)
        self.model_dir = resolve_nlu_model(self.settings, bot)
        self.settings = self.settings.replace(nlu_model_dir=str(self.model_dir))
        return self.model_dir

    def prepare_knowledge(self) -> Path | None:
        """The knowledge index workers serve (PARLEY_KB_INDEX, or the demo one, built once)."""
        if self.kb_index is None:
            corpus = bot_files(self.settings.bot_dir).knowledge
            if corpus.is_file():
                self.kb_index = resolve_kb_index(self.settings, corpus)
        return self.kb_index

    def ensure_dev_tenant(self, origins: list[str]) -> TenantConfig:
        """The development tenant (PARLEY_DEV_TENANT, ``demo``), created if missing, with
        ``origins`` (the local chat page's) added to its allowed Origins."""
        return asyncio.run(self._ensure_dev_tenant(origins))

    async def _ensure_dev_tenant(self, origins: list[str]) -> TenantConfig:
        redis = connect_cluster(self.settings.redis_startup_nodes)
        try:
            store = TenantStore(redis)
            config = await store.get(self.settings.dev_tenant)
            if config is None:
                config = tenant_config(
                    self.settings.dev_tenant, tiers=("default", "authenticated", "premium"),
                    origins=origins, branding=Branding(name="Parley demo"),
                )  # fmt: skip
                await store.create(config)
            elif missing := [o for o in origins if o not in config.allowed_origins]:
                config = dataclasses.replace(
                    config, allowed_origins=(*config.allowed_origins, *missing))
                await store.put(config)
            return config
        finally:
            await redis.aclose()

    # -- processes -----------------------------------------------------------

    def spawn(
        self, name: str, args: list[str], ready_url: str, env: dict[str, str],
        *, module: str = "parley",
    ) -> ChildProcess:
        """Run ``python -m module *args`` with this stack's settings in its environment,
        logging to ``<data dir>/logs/<name>.log``; stopped with the stack."""
        log_dir = self.settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        argv, env = [module, *args], {**self.settings.to_env(), **env}
        child = ChildProcess(name, _launch(argv, env, log_dir / f"{name}.log"), ready_url,
                             log_dir / f"{name}.log", argv, env)
        self.children.append(child)
        return child

    def respawn(self, child: ChildProcess) -> None:
        """Start ``child`` again (it exited), with the same command, environment and log."""
        if child.alive():
            raise InfraError(f"{child.name} is still running (pid {child.pid})")
        child.popen = _launch(child.argv, child.env, child.log_path)

    def start_gateway(self, port: int | None = None, name: str = "") -> ChildProcess:
        """A gateway on ``port`` (default PARLEY_GATEWAY_PORT). Port 0 ("any") is a free
        port picked here, so that its /readyz URL names the port it listens on.

        Its API port (webhooks, gateway/api.py) is PARLEY_GATEWAY_API_PORT for the first
        gateway on the default port, and a free one for the others (several gateways on
        one machine, tests and benchmarks that pick their ports)."""
        first = not any(c.name.startswith("gateway") for c in self.children)
        api_port = self.settings.gateway_api_port if port is None and first else 0
        port = self.settings.gateway_port if port is None else port
        if port == 0:
            port = find_free_ports(1)[0]
        if api_port == 0:
            api_port = next(p for p in find_free_ports(2) if p != port)
        name = name or f"gateway-{port}"
        host = self.settings.gateway_host
        # Before spawning: a second `parley up` would otherwise find the first one's
        # gateway answering /readyz on this port while its own had failed to bind it.
        check_ports_free(host, [(f"{name} (PARLEY_GATEWAY_PORT)", port),
                                (f"{name} (PARLEY_GATEWAY_API_PORT)", api_port)])
        if not self.callback_env:
            self.callback_env = {"PARLEY_CALLBACK_BASE_URL": f"http://{host}:{api_port}"}
        return self.spawn(name, ["gateway", "--port", str(port), "--api-port", str(api_port),
                                 "--id", name],
                           f"http://{host}:{port}/readyz", self.gateway_env)

    def start_worker(self, web_port: int | None = None, name: str = "") -> ChildProcess:
        """A worker; its HTTP port is PARLEY_WORKER_WEB_PORT for the first, free ones after."""
        if self.model_dir is None:
            self.prepare_model()
        kb_index = self.prepare_knowledge()
        env = {**({"PARLEY_KB_INDEX": str(kb_index)} if kb_index else {}), **self.crm_env,
               **self.callback_env}
        if web_port is None:
            first = not any(c.name.startswith("worker") for c in self.children)
            web_port = self.settings.worker_web_port if first else find_free_ports(1)[0]
        name = name or f"worker-{web_port}"
        check_ports_free(self.settings.worker_web_host,
                         [(f"{name} (PARLEY_WORKER_WEB_PORT)", web_port)])
        return self.spawn(name, ["worker", "--web-port", str(web_port)],
                           f"http://127.0.0.1:{web_port}/readyz", env)

    def start_crm(self, port: int | None = None) -> ChildProcess:
        """The reference CRM (``parley crm``, infra/crm/) on ``port`` (default
        PARLEY_CRM_PORT; 0: any free port); workers started after it get its URL and
        credentials (``CRM_URL``, ``CRM_CLIENT_ID``, ``CRM_CLIENT_SECRET``: what the demo's
        integrations.yml reads)."""
        crm = CrmSettings.from_env()
        port = crm.port if port is None else port
        port = port or find_free_ports(1)[0]
        check_ports_free(crm.host, [("crm (PARLEY_CRM_PORT)", port)])
        url = f"http://{crm.host}:{port}"
        self.crm_env = {"CRM_URL": url, "CRM_CLIENT_ID": crm.client_id,
                        "CRM_CLIENT_SECRET": crm.client_secret}
        self.gateway_env = {"PARLEY_CALLBACK_SECRET_CRM": crm.callback_secret}
        return self.spawn("crm", ["crm", "--port", str(port)], f"{url}/healthz", {})

    def wait_ready(self, children: list[ChildProcess] | None = None, timeout: float = 60) -> None:
        """Wait until every child answers /readyz; raise with its log tail if one dies."""
        pending = list(children if children is not None else self.children)
        deadline = time.monotonic() + timeout
        while pending:
            for child in list(pending):
                if not child.alive():
                    raise InfraError(f"{child.name} exited with {child.popen.returncode}:\n"
                                     + log_tail(child.log_path, 30))
                if child.ready():
                    pending.remove(child)
            if pending and time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise InfraError(f"not ready after {timeout:.0f}s: {names}\n"
                                 + log_tail(pending[0].log_path, 30))
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop gateways and workers, all at once, then the infrastructure if this stack
        started it."""
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + DEFAULT_GRACE
        for child in self.children:
            child.wait_or_kill(deadline)
        self.children.clear()
        if self.infra_owned and self._infra is not None:
            self._infra.stop()
            self._infra, self.infra_owned = None, False


def _launch(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m argv...`` with ``env`` over ours, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", *argv],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop them
        )
