"""``parley bot``: publish a trained bot version to every running worker.

* ``parley bot publish BOT --tenant T [--model DIR]`` validates the bot folder
  (every problem with its file and line; nothing is published while one is an
  error), takes its trained NLU model (``--model``, or the one ``parley train BOT``
  caches, trained now when missing; a model trained on other intents is refused),
  packs both into one version and publishes it to the compacted ``bots`` topic,
  keyed by tenant; every worker following the topic swaps the tenant's bot
  without a restart. The documents of
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
import json
from pathlib import Path

import click

from agents.bots.bundle import BotBundle, bundle_from_folders
from agents.bots.catalog import read_published
from agents.bots.knowledge import KNOWLEDGE_FOLDER, knowledge_documents, previous_document_ids
from agents.bots.loading import intents_mismatch
from agents.bots.publisher import BotPublisher, encode_version
from agents.dialogue.domain import Bot
from agents.dialogue.loader import BotFolderError, load_bot
from agents.dialogue.training import ensure_trained
from agents.knowledge.documents import Document
from agents.knowledge.publisher import KbPublisher
from agents.nlu.manifest import MANIFEST_NAME
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.topics import BOTS, KB_DOCUMENTS, bots_max_message_bytes

__all__ = ["bot", "check_model"]

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def bot() -> None:
    """Publish trained bot versions to running workers (the compacted `bots` topic)."""


@bot.command()
@click.argument("bot_dir", metavar="BOT", type=_DIR)
@click.option("--tenant", required=True, help="The tenant this bot serves.")
@click.option("--model", "model_dir", type=_DIR,
              help="The bot's trained NLU model folder; default: the one `parley train BOT` "
                   "caches (trained now when missing).")
@click.option("--knowledge/--no-knowledge", default=True, show_default=True,
              help="Also publish the documents of BOT/knowledge/ to kb.documents for TENANT.")
@click.option("--dry-run", is_flag=True, help="Pack and check the version; publish nothing.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              help="Seconds to wait for the broker to read the previous version.")
def publish(bot_dir: Path, tenant: str, model_dir: Path | None, knowledge: bool,
            dry_run: bool, timeout_s: float) -> None:
    """Publish BOT, with its trained model, as TENANT's bot on every running worker."""
    settings = Settings.from_env()
    topic = settings.topic(BOTS)
    try:
        loaded = load_bot(bot_dir)
    except BotFolderError as exc:
        raise click.ClickException(f"nothing was published: {exc}") from exc
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    if model_dir is None:
        model_dir = ensure_trained(loaded, settings.data_dir / "bots", echo=True).nlu_dir
    check_model(loaded, model_dir)
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


def check_model(bot: Bot, model_dir: Path) -> None:
    """Refuse a model trained on other intents than the bot's (a stale ``--model``): the
    worker would route messages to intents the flows do not know, or never to new ones."""
    manifest = model_dir / MANIFEST_NAME
    try:
        labels = set(json.loads(manifest.read_text(encoding="utf-8"))["labels"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{manifest} is not a trained NLU model's manifest: "
                                   f"{exc}") from exc
    problem = intents_mismatch(bot.intents, labels)
    if problem is not None:
        raise click.ClickException(
            f"the model in {model_dir} was not trained on this bot's intents; {problem}"
            + f": run `parley train {bot.folder}` (or leave out --model)")


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
