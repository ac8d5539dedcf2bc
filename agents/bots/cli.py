"""``parley bot``: publish a trained bot version to every running worker.

* ``parley bot publish BOT --tenant T --model DIR`` packs the bot folder and its
  trained NLU model (the folder ``parley train BOT`` made) into one version and
  publishes it to the compacted ``bots`` topic, keyed by tenant; every worker
  following the topic swaps the tenant's bot without a restart. The documents of
  the bot's ``knowledge/`` folder go to ``kb.documents`` under the tenant first
  (and those the previous version had and this one has not are deleted), so the
  bot's knowledge answers are there when it goes live (``--no-knowledge``: not).
  ``--dry-run`` packs and checks, and publishes nothing.
* ``parley bot unpublish --tenant T`` publishes a tombstone: workers drop the
  tenant's bot (its knowledge documents stay: ``parley kb delete`` removes them).
* ``parley bot list`` reads the topic and prints each tenant's current version.

Who may publish: whoever may produce to the ``bots`` topic (operators, a CI job).
On a shared cluster, grant WRITE on ``bots`` to them only (Kafka ACLs): what is
published there is what every worker runs, for every conversation of the tenant.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from agents.bots.bundle import BotBundle, bundle_from_folders
from agents.bots.catalog import read_published
from agents.bots.knowledge import KNOWLEDGE_FOLDER, knowledge_documents, previous_document_ids
from agents.bots.publisher import BotPublisher, encode_version
from agents.knowledge.documents import Document
from agents.knowledge.publisher import KbPublisher
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.topics import BOTS, KB_DOCUMENTS, bots_max_message_bytes

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
@click.option("--knowledge/--no-knowledge", default=True, show_default=True,
              help="Also publish the documents of BOT/knowledge/ to kb.documents for TENANT.")
@click.option("--dry-run", is_flag=True, help="Pack and check the version; publish nothing.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              help="Seconds to wait for the broker to read the previous version.")
def publish(bot_dir: Path, tenant: str, model_dir: Path, knowledge: bool, dry_run: bool,
            timeout_s: float) -> None:
    """Publish BOT, with its trained model, as TENANT's bot on every running worker."""
    settings = Settings.from_env()
    topic = settings.topic(BOTS)
    bundle = bundle_from_folders(tenant, bot_dir, model_dir)
    described = (f"{bundle.name} version {bundle.version[:12]} for tenant {tenant} "
                 f"({len(bundle.files)} files")
    documents, problems = (knowledge_documents(bot_dir / KNOWLEDGE_FOLDER, tenant)
                           if knowledge else ([], []))
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if dry_run:
        value = encode_version(bundle, codec_for("bot_version", "", topic),
                               bots_max_message_bytes(), topic)
        click.echo(f"would publish {described}, {len(value):,} bytes) to {topic}")
        if knowledge:
            click.echo(f"would publish {len(documents)} knowledge documents to "
                       f"{settings.topic(KB_DOCUMENTS)}")
        return
    if knowledge:
        _, previous = read_published(settings.kafka_bootstrap, topic,
                                     registry_url=settings.schema_registry_url,
                                     timeout_s=timeout_s, keep_files_of=tenant)
        _publish_documents(settings, tenant, documents, previous)
    publisher = BotPublisher(settings.kafka_bootstrap, topic,
                             registry_url=settings.schema_registry_url)
    size = publisher.publish(bundle)
    publisher.flush()
    click.echo(f"published {described}, {size:,} bytes) to {topic}")


def _publish_documents(settings: Settings, tenant: str, documents: list[Document],
                       previous: BotBundle | None) -> None:
    """The bot's documents to kb.documents; those of the previous version not in this
    one are deleted. Flushed before the bot itself is published."""
    gone = sorted(previous_document_ids(previous.files, tenant) - {d.id for d in documents}) \
        if previous is not None else []
    if not documents and not gone:
        return
    topic = settings.topic(KB_DOCUMENTS)
    publisher = KbPublisher(settings.kafka_bootstrap, topic,
                            registry_url=settings.schema_registry_url)
    for document in documents:
        publisher.publish(document)
    for doc_id in gone:
        publisher.delete(tenant, doc_id)
    publisher.flush()
    click.echo(f"published {len(documents)} knowledge documents to {topic}"
               + (f", deleted {len(gone)}: {', '.join(gone)}" if gone else ""))


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
    published, _ = read_published(settings.kafka_bootstrap, topic,
                                  registry_url=settings.schema_registry_url,
                                  timeout_s=timeout_s)
    if not published:
        click.echo(f"no bot is published on {topic}")
    for tenant, version in sorted(published.items()):
        at = datetime.datetime.fromtimestamp(version.published_at_ms / 1000, datetime.UTC)
        click.echo(f"{tenant}\t{version.name}\t{version.version[:12]}\t"
                   f"{at:%Y-%m-%d %H:%M:%S}Z\t{version.published_by}\t{version.files} files\t"
                   f"{version.size:,} bytes")
