"""``parley bot``: publish a trained bot version to every running worker.

* ``parley bot publish BOT --tenant T --model DIR`` packs the bot folder and its
  trained NLU model (the folder ``parley train BOT`` made) into one version and
  publishes it to the compacted ``bots`` topic, keyed by tenant; every worker
  following the topic swaps the tenant's bot without a restart.
  ``--dry-run`` packs and checks the size, and publishes nothing.
* ``parley bot unpublish --tenant T`` publishes a tombstone: workers drop the
  tenant's bot.
* ``parley bot list`` reads the topic and prints each tenant's current version.

Who may publish: whoever may produce to the ``bots`` topic (operators, a CI job).
On a shared cluster, grant WRITE on ``bots`` to them only (Kafka ACLs): what is
published there is what every worker runs, for every conversation of the tenant.
"""

from __future__ import annotations

import datetime
import threading
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Message

from agents.bots.bundle import bundle_from_folders, millis
from agents.bots.follower import consumer_limits
from agents.bots.publisher import BotPublisher, encode_version
from kernel.errors import DecodeError
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.follow import TopicFollower
from streams.topics import BOTS, bots_max_message_bytes

__all__ = ["bot"]

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def bot() -> None:
    """Publish trained bot versions to running workers (the compacted `bots` topic)."""


@bot.command()
@click.argument("bot_dir", metavar="BOT", type=_DIR)
@click.option("--tenant", required=True, help="The tenant this bot serves.")
@click.option("--model", "model_dir", required=True, type=_DIR,
              help="The bot's trained NLU model folder (what `parley train BOT` made).")
@click.option("--dry-run", is_flag=True, help="Pack and check the version; publish nothing.")
def publish(bot_dir: Path, tenant: str, model_dir: Path, dry_run: bool) -> None:
    """Publish BOT, with its trained model, as TENANT's bot on every running worker."""
    settings = Settings.from_env()
    topic = settings.topic(BOTS)
    bundle = bundle_from_folders(tenant, bot_dir, model_dir)
    described = (f"{bundle.name} version {bundle.version[:12]} for tenant {tenant} "
                 f"({len(bundle.files)} files")
    if dry_run:
        value = encode_version(bundle, codec_for("bot_version", "", topic),
                               bots_max_message_bytes(), topic)
        click.echo(f"would publish {described}, {len(value):,} bytes) to {topic}")
        return
    publisher = BotPublisher(settings.kafka_bootstrap, topic,
                             registry_url=settings.schema_registry_url)
    size = publisher.publish(bundle)
    publisher.flush()
    click.echo(f"published {described}, {size:,} bytes) to {topic}")


@bot.command()
@click.option("--tenant", required=True, help="The tenant whose bot to withdraw.")
def unpublish(tenant: str) -> None:
    """Withdraw TENANT's bot from every running worker."""
    settings = Settings.from_env()
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS),
                             registry_url=settings.schema_registry_url)
    publisher.unpublish(tenant)
    publisher.flush()
    click.echo(f"unpublished tenant {tenant}'s bot from {settings.topic(BOTS)}")


@bot.command("list")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              help="Seconds to wait for the topic to be read.")
def list_versions(timeout_s: float) -> None:
    """Print each tenant's current bot version, as workers see it."""
    settings = Settings.from_env()
    topic = settings.topic(BOTS)
    codec = codec_for("bot_version", settings.schema_registry_url, topic)
    current: dict[str, dict[str, Any] | None] = {}
    lock = threading.Lock()

    def take(records: list[Message]) -> None:
        for msg in records:
            tenant = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            try:
                record = codec.decode(value) if value is not None else None
            except DecodeError:
                continue  # workers skip it too
            with lock:
                current[tenant] = None if record is None else {
                    "version": record["bot_version"], "name": record["bot_name"],
                    "at": millis(record["published_at"]), "by": record.get("published_by", ""),
                    "files": len(record["files"]),
                    "bytes": sum(len(f["data"]) for f in record["files"]),
                }

    follower = TopicFollower(settings.kafka_bootstrap, topic, take, from_beginning=True,
                             batch_size=16, log_as="bots.list",
                             config=consumer_limits(bots_max_message_bytes()))
    follower.assign()
    follower.start()
    try:
        if not follower.caught_up.wait(timeout_s):
            raise click.ClickException(f"{topic} was not read within {timeout_s:g} s")
    finally:
        follower.stop()
    if follower.error is not None:
        raise click.ClickException(f"cannot read {topic}: {follower.error}")
    rows = sorted((t, v) for t, v in current.items() if v is not None)
    if not rows:
        click.echo(f"no bot is published on {topic}")
    for tenant, version in rows:
        at = datetime.datetime.fromtimestamp(version["at"] / 1000, datetime.UTC)
        click.echo(f"{tenant}\t{version['name']}\t{version['version'][:12]}\t"
                   f"{at:%Y-%m-%d %H:%M:%S}Z\t{version['by']}\t{version['files']} files\t"
                   f"{version['bytes']:,} bytes")
