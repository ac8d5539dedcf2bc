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
* ``parley bot publish BOT --tenant T --canary PERCENT`` publishes the version as
  the tenant's **canary** (agents/bots/canary.py): users whose rollout bucket is
  below PERCENT start new tasks on it, everyone else stays on the stable version.
  Its knowledge documents wait for ``promote`` (they are per tenant, not per
  version). ``parley bot canary --tenant T --percent P`` changes the percentage;
  ``parley bot promote --tenant T`` makes the canary the stable version (its
  documents published then); ``parley bot rollback --tenant T`` withdraws it. A
  task in flight finishes on the version it started on.
* ``parley bot unpublish --tenant T`` publishes tombstones: workers drop the
  tenant's bot, canary included (its knowledge documents stay: ``parley kb
  delete`` removes them).
* ``parley bot list`` reads the topic and prints each tenant's stable version and
  canary (with its percentage).

Who may publish: whoever may produce to the ``bots`` topic (operators, a CI job).
On a shared cluster, grant WRITE on ``bots`` to them only (Kafka ACLs): what is
published there is what every worker runs, for every conversation of the tenant.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import click

from agents.bots.bundle import BotBundle, bundle_from_folders
from agents.bots.canary import check_percent
from agents.bots.catalog import Published, PublishedVersion, read_published
from agents.bots.errors import BotPublishError
from agents.bots.knowledge import (
    KNOWLEDGE_FOLDER,
    bundle_documents,
    knowledge_documents,
    previous_document_ids,
)
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

__all__ = ["bot", "check_model", "version_line"]

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
@click.option("--canary", "canary", type=int, metavar="PERCENT",
              help="Publish as a canary for PERCENT (1-99) % of TENANT's users; the others "
                   "stay on the stable version (`parley bot promote` / `rollback`).")
@click.option("--dry-run", is_flag=True, help="Pack and check the version; publish nothing.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              help="Seconds to wait for the broker to read the previous version.")
def publish(bot_dir: Path, tenant: str, model_dir: Path | None, knowledge: bool,
            canary: int | None, dry_run: bool, timeout_s: float) -> None:
    """Publish BOT, with its trained model, as TENANT's bot on every running worker."""
    settings = Settings.from_env()
    topic = settings.topic(BOTS)
    if canary is not None:
        _checked_percent(canary)
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
    if canary is not None:
        bundle = dataclasses.replace(bundle, canary_percent=canary)
        described = f"{described}, canary for {canary} % of its users"
        if knowledge:  # kb.documents is per tenant: the canary's would reach every user
            click.echo("note: the canary's knowledge documents are published when it is "
                       "promoted; until then every user gets the stable version's", err=True)
            knowledge = False
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
    if knowledge or canary is not None:
        published = _read(settings, timeout_s, keep_files_of=tenant)
        if canary is not None and tenant not in published.stable:
            raise click.ClickException(
                f"nothing was published: tenant {tenant} has no stable version for the "
                f"others to stay on; publish one without --canary first")
        if knowledge:
            _publish_documents(settings, tenant, documents, published.kept_stable)
    publisher = BotPublisher(settings.kafka_bootstrap, topic,
                             registry_url=settings.schema_registry_url)
    size = publisher.publish(bundle)
    _flush(publisher)
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


def _checked_percent(percent: int) -> int:
    try:
        return check_percent(percent)
    except BotPublishError as exc:
        raise click.ClickException(str(exc)) from exc


def _read(settings: Settings, timeout_s: float, keep_files_of: str | None = None
          ) -> Published:
    try:
        return read_published(settings.kafka_bootstrap, settings.topic(BOTS),
                              registry_url=settings.schema_registry_url, timeout_s=timeout_s,
                              keep_files_of=keep_files_of)
    except BotPublishError as exc:
        raise click.ClickException(str(exc)) from exc


def _flush(publisher: BotPublisher) -> None:
    try:
        publisher.flush()
    except BotPublishError as exc:
        raise click.ClickException(str(exc)) from exc


def _canary_of(settings: Settings, tenant: str, timeout_s: float) -> tuple[Published, BotBundle]:
    """What ``bots`` holds for ``tenant``, and its canary's checked bundle; a clear error
    when it has no canary (or its record does not check)."""
    published = _read(settings, timeout_s, keep_files_of=tenant)
    if tenant not in published.canaries:
        raise click.ClickException(f"tenant {tenant} has no canary on {settings.topic(BOTS)} "
                                   f"(`parley bot list` shows what it has)")
    if published.kept_canary is None:
        raise click.ClickException(f"tenant {tenant}'s canary on {settings.topic(BOTS)} does "
                                   f"not check; withdraw it with `parley bot rollback`")
    return published, published.kept_canary


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


_TIMEOUT = click.option("--timeout", "timeout_s", default=30.0, show_default=True,
                        help="Seconds to wait for the topic to be read.")


@bot.command("canary")
@click.option("--tenant", required=True, help="The tenant whose canary to change.")
@click.option("--percent", required=True, type=int,
              help="The percentage of TENANT's users its canary serves (1-99; 0 withdraws it).")
@_TIMEOUT
def set_canary(tenant: str, percent: int, timeout_s: float) -> None:
    """Serve TENANT's canary to PERCENT % of its users (the users already in stay in)."""
    settings = Settings.from_env()
    if percent == 0:
        _withdraw(settings, tenant, timeout_s)
        return
    _checked_percent(percent)
    _, bundle = _canary_of(settings, tenant, timeout_s)
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS),
                             registry_url=settings.schema_registry_url)
    publisher.publish(dataclasses.replace(bundle, canary_percent=percent))
    _flush(publisher)
    click.echo(f"tenant {tenant}'s canary {bundle.name} version {bundle.version[:12]} now "
               f"serves {percent} % of its users (was {bundle.canary_percent} %)")


@bot.command()
@click.option("--tenant", required=True, help="The tenant whose canary to promote.")
@click.option("--knowledge/--no-knowledge", default=True, show_default=True,
              help="Publish the canary's knowledge documents to kb.documents for TENANT "
                   "(deleting the stable version's that it has not).")
@_TIMEOUT
def promote(tenant: str, knowledge: bool, timeout_s: float) -> None:
    """Make TENANT's canary its stable version, for every user."""
    settings = Settings.from_env()
    published, bundle = _canary_of(settings, tenant, timeout_s)
    if knowledge:
        documents, problems = bundle_documents(bundle.files, tenant)
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
        _publish_documents(settings, tenant, documents, published.kept_stable)
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS),
                             registry_url=settings.schema_registry_url)
    publisher.publish(dataclasses.replace(bundle, canary_percent=0))
    publisher.withdraw_canary(tenant)
    _flush(publisher)
    before = published.stable.get(tenant)
    click.echo(f"promoted {bundle.name} version {bundle.version[:12]} to tenant {tenant}'s "
               f"stable version" + (f" (was {before.version[:12]})" if before else ""))


@bot.command()
@click.option("--tenant", required=True, help="The tenant whose canary to withdraw.")
@_TIMEOUT
def rollback(tenant: str, timeout_s: float) -> None:
    """Withdraw TENANT's canary: every user starts new tasks on the stable version."""
    _withdraw(Settings.from_env(), tenant, timeout_s)


def _withdraw(settings: Settings, tenant: str, timeout_s: float) -> None:
    published = _read(settings, timeout_s)
    canary = published.canaries.get(tenant)
    if canary is None:
        raise click.ClickException(f"tenant {tenant} has no canary on {settings.topic(BOTS)}")
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS),
                             registry_url=settings.schema_registry_url)
    publisher.withdraw_canary(tenant)
    _flush(publisher)
    stable = published.stable.get(tenant)
    click.echo(f"withdrew tenant {tenant}'s canary {canary.name} version "
               f"{canary.version[:12]}; new tasks run on "
               + (f"{stable.name} version {stable.version[:12]}" if stable
                  else "the workers' own bot (no stable version)"))


@bot.command()
@click.option("--tenant", required=True, help="The tenant whose bot to withdraw.")
def unpublish(tenant: str) -> None:
    """Withdraw TENANT's bot, canary included, from every running worker."""
    settings = Settings.from_env()
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS),
                             registry_url=settings.schema_registry_url)
    publisher.unpublish(tenant)
    _flush(publisher)
    click.echo(f"unpublished tenant {tenant}'s bot from {settings.topic(BOTS)}")


@bot.command("list")
@_TIMEOUT
def list_versions(timeout_s: float) -> None:
    """Print each tenant's stable bot version and canary, as workers see them."""
    settings = Settings.from_env()
    published = _read(settings, timeout_s)
    if not published.stable and not published.canaries:
        click.echo(f"no bot is published on {settings.topic(BOTS)}")
    for tenant in sorted({*published.stable, *published.canaries}):
        for version in (published.stable.get(tenant), published.canaries.get(tenant)):
            if version is not None:
                click.echo(version_line(version))


def version_line(version: PublishedVersion) -> str:
    """One line of ``parley bot list``: tenant, track (``stable``, ``canary 10%``), name,
    version, when, by whom, files, size (tab-separated)."""
    at = datetime.datetime.fromtimestamp(version.published_at_ms / 1000, datetime.UTC)
    track = f"canary {version.canary_percent}%" if version.canary_percent else "stable"
    return (f"{version.tenant_id}\t{track}\t{version.name}\t{version.version[:12]}\t"
            f"{at:%Y-%m-%d %H:%M:%S}Z\t{version.published_by}\t{version.files} files\t"
            f"{version.size:,} bytes")
