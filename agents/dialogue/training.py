"""A bot folder's trained artefacts, built once and cached by what they are built from.

``parley train`` and ``parley shell``, the worker serving ``PARLEY_BOT``, ``parley up``,
``parley bot publish`` and the benchmarks all get a bot's NLU model and knowledge index
here, so the model a builder tried in the shell is the one the stream serves, trained
with the recogniser settings of the bot's own ``bot.yml`` (``nlu:``) — nothing about a
particular bot lives in product code.

Cache layout under ``cache_root`` (``<data dir>/bots`` by default):

* ``nlu-<hash>/`` — the NLU model; the hash covers the training examples, the training
  parameters and the training code's version, so editing a response or a flow does not
  retrain, and an upgrade that changes training builds anew instead of loading a stale one;
* ``<bot content hash>/kb-…/`` — the knowledge index of the bot's ``knowledge/`` folder.

Each artefact is built in a temporary folder renamed into place when complete
(:func:`kernel.files.atomic_directory`), so concurrent callers never load half a model.

Training needs the ``train`` extra (numpy, scikit-learn): those modules are imported where
they are used, so ``parley validate`` and ``parley init`` run on any install
(kernel/extras.py).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agents.dialogue.domain import Bot
from kernel.settings import Settings

if TYPE_CHECKING:
    from agents.nlu.train import TrainingParams

__all__ = ["KB_TENANT", "TrainedBot", "ensure_knowledge_index", "ensure_nlu_model",
           "ensure_trained", "nlu_cache_key", "resolve_nlu_model", "training_params"]

log = logging.getLogger(__name__)

KB_TENANT = "default"
"""The tenant a bot's own index is built under (one bot per index)."""


@dataclass(frozen=True, slots=True)
class TrainedBot:
    """Where a trained bot's artefacts are: the NLU model, and the index when it has
    documents."""

    bot: Bot
    nlu_dir: Path
    kb_dir: Path | None


def training_params(bot: Bot) -> TrainingParams:
    """The NLU training parameters of ``bot`` (``bot.yml`` ``nlu:``)."""
    from agents.nlu.recognisers import DEFAULT_ID_PATTERNS, RecogniserConfig
    from agents.nlu.train import TrainingParams

    options = bot.settings.nlu
    return TrainingParams(
        oos_label=options.oos_intent,
        validation_fraction=options.validation_fraction,
        context_encoder=options.context_encoder,
        recognisers=RecogniserConfig(
            id_patterns=dict(options.id_patterns) or dict(DEFAULT_ID_PATTERNS),
            default_country_code=options.default_country_code),
    )


def nlu_cache_key(bot: Bot) -> str:
    """What the NLU model of ``bot`` is built from: examples, parameters, code version."""
    from agents.nlu.train import CODE_VERSION

    digest = hashlib.sha256(CODE_VERSION.encode())
    digest.update(repr(training_params(bot)).encode())
    for example in bot.training_examples():
        digest.update(repr(example).encode())
    return digest.hexdigest()[:16]


def ensure_nlu_model(bot: Bot, cache_root: Path, *, show_progress: bool = False,
                     echo: bool = False) -> Path:
    """The NLU model of ``bot`` in ``cache_root/nlu-<hash>/``, trained on first call."""
    from agents.nlu.manifest import MANIFEST_NAME
    from agents.nlu.train import require_training_packages, train_model
    from kernel.extras import MissingExtra
    from kernel.files import atomic_directory

    folder = Path(cache_root) / f"nlu-{nlu_cache_key(bot)}"
    if (folder / MANIFEST_NAME).is_file():
        return folder
    params = training_params(bot)
    try:
        require_training_packages(params)
    except MissingExtra as exc:
        raise exc.needed_for(f"training the NLU model of the bot in {bot.folder} "
                             "(PARLEY_NLU_MODEL names a trained model instead)") from exc
    examples = bot.training_examples()
    log.info("nlu.train bot=%s examples=%d folder=%s", bot.settings.name, len(examples), folder)
    if echo:
        click.echo(f"training the NLU model on {len(examples)} examples -> {folder}", err=True)
    with atomic_directory(folder, replace=False) as build:
        train_model(examples, build, params, show_progress=show_progress)
    return folder


def ensure_knowledge_index(bot: Bot, cache_root: Path, *, tenant: str = KB_TENANT,
                           echo: bool = False) -> Path | None:
    """The knowledge index of ``bot``'s ``knowledge/`` folder, built on first call; None
    when the bot has no documents. The index holds the documents under ``tenant``."""
    if not bot.has_knowledge:
        return None
    from agents.encoders import embedder as encoders
    from agents.knowledge import knowledge_base
    from agents.knowledge.documents import Document, load_corpus
    from agents.knowledge.knowledge_base import KnowledgeBase
    from kernel.files import atomic_directory

    embedder = encoders.resolve_kind("auto")
    kb_dir = Path(cache_root) / bot.content_hash() / (
        f"kb-{tenant}-{embedder}-b{encoders.BUILD_VERSION}-f{knowledge_base.FORMAT_VERSION}")
    if (kb_dir / "manifest.json").is_file():
        return kb_dir
    docs: dict[str, Document] = {}
    sources = [p for p in bot.knowledge_files if p.suffix == ".jsonl"]
    if any(p.suffix != ".jsonl" for p in bot.knowledge_files):
        sources.append(bot.folder / "knowledge")  # Markdown, text and HTML, read as a folder
    for source in sources:
        for doc in load_corpus(source, default_tenant=tenant):
            if isinstance(doc, Document):
                docs[doc.id] = doc
            elif echo:
                click.echo(f"skipped a document: {doc}", err=True)
    if echo:
        click.echo(f"building the knowledge index of {len(docs)} documents -> {kb_dir}",
                   err=True)
    with atomic_directory(kb_dir) as build:
        kb = KnowledgeBase.create(build, embedder=embedder)
        kb.upsert_many(list(docs.values()))
        kb.save()
    return kb_dir


def ensure_trained(bot: Bot, cache_root: Path, *, tenant: str = KB_TENANT,
                   show_progress: bool = False, echo: bool = False) -> TrainedBot:
    """The NLU model and knowledge index of ``bot``, each built when missing."""
    nlu_dir = ensure_nlu_model(bot, cache_root, show_progress=show_progress, echo=echo)
    kb_dir = ensure_knowledge_index(bot, cache_root, tenant=tenant, echo=echo)
    return TrainedBot(bot, nlu_dir, kb_dir)


def resolve_nlu_model(settings: Settings, bot: Bot) -> Path:
    """The NLU model folder a worker serves: ``PARLEY_NLU_MODEL``, else ``bot``'s own,
    trained once under ``<data dir>/bots``."""
    if settings.nlu_model_dir:
        return Path(settings.nlu_model_dir)
    return ensure_nlu_model(bot, settings.data_dir / "bots")
