"""``parley infra install | up | down | status | topics``: embedded Kafka and Redis Cluster.

Defaults come from :class:`kernel.settings.Settings` (``PARLEY_DATA_DIR``,
``PARLEY_KAFKA_BOOTSTRAP``'s port, ``PARLEY_REDIS_NODES``'s first port and the
five after it); options override them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from infra.embedded import CLUSTER_NODES, EmbeddedInfra
from infra.kafka_dist import KAFKA_VERSION, install_kafka
from infra.pidfile import read_pidfile
from infra.process import DEFAULT_GRACE, wait_for_stop
from infra.topics import broker_count, ensure_topics
from kernel.credentials import CREDENTIALS_FILE
from kernel.errors import InfraError, ParleyError
from kernel.settings import Settings
from streams.security import kafka_credentials
from streams.topics import all_topics

__all__ = ["infra"]

logger = logging.getLogger(__name__)

KEPT_ON_DISK = (
    "Topics, offsets and keys are kept on disk in {data_dir}: `parley infra down` and `up` "
    "again keeps them; delete that folder to start empty."
)


class _Config:
    def __init__(
        self, data_dir: Path | None, kafka_port: int | None, redis_port: int | None, grace: float
    ) -> None:
        try:  # the credentials of --data-dir's stack, unless the environment gives some
            given = {} if data_dir is None else {"data_dir": data_dir}
            settings = Settings.from_env(None, **given)
        except ParleyError as exc:
            raise click.ClickException(str(exc)) from exc
        self.settings = settings
        self.data_dir = data_dir if data_dir is not None else settings.data_dir
        self.kafka_port = kafka_port or settings.kafka_port
        first = redis_port or settings.redis_startup_nodes[0][1]
        self.redis_ports = list(range(first, first + CLUSTER_NODES))
        self.grace = grace
        self.ports_given = kafka_port is not None or redis_port is not None

    def infra(self, *, prefer_recorded: bool, brokers: int = 1) -> EmbeddedInfra:
        """Ports from the options, else (for down/status) the ones recorded in pids.json."""
        try:
            if prefer_recorded and not self.ports_given:
                recorded = EmbeddedInfra.from_pidfile(self.data_dir, grace=self.grace)
                if recorded is not None:
                    return recorded
            return EmbeddedInfra(
                self.data_dir,
                kafka_port=self.kafka_port,
                brokers=brokers,
                redis_ports=self.redis_ports,
                grace=self.grace,
            )
        except (ValueError, InfraError) as exc:
            raise click.ClickException(str(exc)) from exc


def _setup_logging(level: str) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")


@click.group("infra")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data and log folder [default: PARLEY_DATA_DIR or .parley].",
)
@click.option(
    "--kafka-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="First broker's port; node i listens on it + 2i, its controller on the next "
    "[default: port of PARLEY_KAFKA_BOOTSTRAP, 9092].",
)
@click.option(
    "--redis-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="First of 6 consecutive Redis ports [default: from PARLEY_REDIS_NODES, 7000].",
)
@click.option(
    "--grace",
    type=float,
    default=DEFAULT_GRACE,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when stopping.",
)
@click.pass_context
def infra(
    ctx: click.Context,
    data_dir: Path | None,
    kafka_port: int | None,
    redis_port: int | None,
    grace: float,
) -> None:
    """Embedded Apache Kafka (KRaft) and Redis Cluster (Valkey) on loopback, data in .parley/."""
    config = _Config(data_dir, kafka_port, redis_port, grace)
    _setup_logging(config.settings.log_level)
    ctx.obj = config


def _already_up(config: _Config) -> bool:
    try:
        recorded = read_pidfile(config.data_dir)
    except InfraError as exc:
        raise click.ClickException(str(exc)) from exc
    if recorded is None:
        return False
    live = recorded.live()
    if not live:
        return False
    if len(live) < len(recorded.processes):
        names = ", ".join(record.name for record, _ in live)
        raise click.ClickException(
            f"infrastructure in {config.data_dir} is only partly running ({names}); "
            "run `parley infra down` and then `parley infra up` again"
        )
    return True


def _echo_ready(infra_: EmbeddedInfra, topics: list[str]) -> None:
    click.echo(f"kafka bootstrap : {infra_.kafka_bootstrap}  "
               f"(Apache Kafka {KAFKA_VERSION}, {infra_.brokers} node(s))")
    click.echo(f"redis nodes     : {infra_.redis_nodes}")
    click.echo(f"topics          : {', '.join(topics)}")
    credentials = infra_.credentials
    click.echo(f"credentials     : {infra_.data_dir / CREDENTIALS_FILE} (Kafka SASL/SCRAM-SHA-512 "
               f"user {credentials.kafka_username}, Redis ACL user {credentials.redis_username})")
    click.echo(f"logs            : {infra_.log_dir}")
    click.echo(KEPT_ON_DISK.format(data_dir=infra_.data_dir))


@infra.command("install")
def install() -> None:
    """Fetch Apache Kafka's jars with Maven (once) into PARLEY_KAFKA_HOME or .parley/kafka."""
    try:
        libs = install_kafka()
    except ParleyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Apache Kafka {KAFKA_VERSION}: {libs}")


@infra.command("up")
@click.option(
    "--foreground", is_flag=True, help="Stay attached; Ctrl-C or SIGTERM stops everything."
)
@click.option(
    "--brokers",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="Kafka nodes: 3 replicates every partition 3 times with min.insync.replicas=2.",
)
@click.option(
    "--timeout",
    type=float,
    default=90.0,
    show_default=True,
    help="Seconds to wait for everything to be ready (a first run also fetches Kafka).",
)
@click.pass_obj
def up(config: _Config, foreground: bool, brokers: str, timeout: float) -> None:
    """Start Kafka and the Redis Cluster, create the topics, then detach."""
    if _already_up(config):
        click.echo(f"already up (see `parley infra status`; pids in {config.data_dir}/pids.json)")
        return
    embedded = config.infra(prefer_recorded=False, brokers=int(brokers))
    specs = all_topics(config.settings.chat_partitions, config.settings.topic_prefix,
                       brokers=embedded.brokers)
    try:
        embedded.start(timeout=timeout)
        ensure_topics(embedded.kafka_bootstrap, specs, timeout=timeout,
                      credentials=embedded.kafka_credentials)
    except InfraError as exc:
        embedded.stop()
        raise click.ClickException(str(exc)) from exc
    except BaseException:
        embedded.stop()
        raise
    _echo_ready(embedded, [spec.name for spec in specs])
    if not foreground:
        click.echo("running in the background; stop with `parley infra down`")
        return
    click.echo("running in the foreground; Ctrl-C stops everything")
    try:
        died = wait_for_stop(lambda: _dead_services(embedded))
        if died:
            raise click.ClickException(f"stopped everything because a process died: {died}")
    finally:
        embedded.stop()
        click.echo("stopped")


def _dead_services(embedded: EmbeddedInfra) -> str | None:
    dead = [s for s in embedded.services if s.returncode() is not None]
    return ", ".join(f"{s.name} (exit {s.returncode()}, log {s.log_path})" for s in dead) or None


@infra.command("down")
@click.pass_obj
def down(config: _Config) -> None:
    """Stop what `parley infra up` started (SIGTERM, grace period, SIGKILL)."""
    embedded = config.infra(prefer_recorded=True)
    try:
        stopped = embedded.stop_recorded()
    except InfraError as exc:
        raise click.ClickException(str(exc)) from exc
    if stopped:
        click.echo(f"stopped {len(stopped)} processes: {', '.join(stopped)}")
    else:
        click.echo(f"nothing to stop (no running processes recorded in {config.data_dir})")


def _status_lines(report: dict[str, Any]) -> list[str]:
    def pid(value: int | None) -> str:
        return "-" if value is None else str(value)

    lines = [f"{'SERVICE':<12} {'PORT':>5} {'PID':>8}  {'STATE':<5} DETAIL"]
    for kafka in report["kafka"]:
        lines.append(
            f"{kafka['name']:<12} {kafka['port']:>5} {pid(kafka['pid']):>8}  "
            f"{'up' if kafka['up'] else 'down':<5} Apache Kafka {KAFKA_VERSION}"
        )
    for node in report["redis"]["nodes"]:
        detail = f"{node['role']}, cluster_state:{node['cluster_state']}" if node["up"] else ""
        lines.append(
            f"{node['name']:<12} {node['port']:>5} {pid(node['pid']):>8}  "
            f"{'up' if node['up'] else 'down':<5} {detail}"
        )
    lines.append(f"redis cluster: {report['redis']['cluster_state']}")
    return lines


@infra.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status(config: _Config, as_json: bool) -> None:
    """Port, pid and state of each service; exits 1 if anything is down."""
    report = config.infra(prefer_recorded=True).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in _status_lines(report):
            click.echo(line)
    if not report["up"]:
        raise SystemExit(1)


@infra.command("topics")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the broker and the topics' partitions.")
@click.pass_obj
def topics(config: _Config, timeout: float) -> None:
    """Create Parley's topics on PARLEY_KAFKA_BOOTSTRAP (any Kafka cluster); idempotent."""
    settings = config.settings
    try:
        credentials = kafka_credentials(settings)
        brokers = broker_count(settings.kafka_bootstrap, timeout=timeout, credentials=credentials)
        specs = all_topics(settings.chat_partitions, settings.topic_prefix, brokers=brokers)
        ensure_topics(settings.kafka_bootstrap, specs, timeout=timeout, credentials=credentials)
    except ParleyError as exc:
        raise click.ClickException(str(exc)) from exc
    for spec in specs:
        compacted = " (compacted)" if spec.compacted else ""
        click.echo(f"{spec.name}: {spec.partitions} partitions, "
                   f"replication {spec.replication_factor}{compacted}")
