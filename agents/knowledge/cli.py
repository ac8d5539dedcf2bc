"""``parley kb``: build, query, evaluate and tune knowledge indexes.

=================  ==============================================================
ingest             documents (JSON lines or a folder of Markdown/HTML) → index,
                   optionally published to kb.documents (--publish)
delete             remove a document from an index and/or publish its tombstone
query              ask an index a question, print the ranked passages
evaluate           hit@k, MRR@10, nDCG@10 and latency over labelled queries
train-reranker     fit the reranker on labelled queries and store it in the index
=================  ==============================================================

A synthetic index for the latency benchmark: ``parley bench kb-synth``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from agents.encoders.embedder import EMBEDDER_KINDS
from agents.knowledge.documents import Document, load_corpus
from agents.knowledge.errors import DocumentRejected
from agents.knowledge.evaluate import evaluate as run_evaluation
from agents.knowledge.evaluate import load_qrels, load_queries
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.publisher import KbPublisher
from agents.knowledge.training import fit_reranker
from kernel.errors import ParleyError
from kernel.extras import require
from kernel.settings import Settings
from streams.topics import KB_DOCUMENTS

__all__ = ["kb"]

_INDEX = click.Path(path_type=Path, file_okay=False)
_EXISTING = click.Path(path_type=Path, exists=True)
_EXISTING_FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


@contextmanager
def _errors_as_click() -> Iterator[None]:
    try:
        yield
    except (ParleyError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc


def _publisher(bootstrap: str | None) -> tuple[KbPublisher, str]:
    settings = Settings.from_env()
    topic = settings.topic(KB_DOCUMENTS)
    publisher = KbPublisher(bootstrap or settings.kafka_bootstrap, topic,
                            registry_url=settings.schema_registry_url)
    return publisher, topic


@click.group()
def kb() -> None:
    """Knowledge bases: ingest, query, evaluate."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@kb.command()
@click.option("--corpus", type=_EXISTING, required=True,
              help="JSON lines {id, title, text, [tenant], [metadata]} or a folder of "
                   ".md/.html/.txt files.")
@click.option("--index", "index_dir", type=_INDEX, required=True,
              help="Index folder (created, or updated in place).")
@click.option("--tenant", default="default", show_default=True,
              help="Tenant of documents that do not name one (all of a folder's).")
@click.option("--embedder", type=click.Choice(EMBEDDER_KINDS), default="auto",
              show_default=True, help="Embedding model of a new index.")
@click.option("--max-doc-bytes", type=int, default=1 << 20, show_default=True,
              help="Reject documents with more UTF-8 text than this.")
@click.option("--publish/--no-publish", default=False, show_default=True,
              help="Also publish the documents to kb.documents (PARLEY_KAFKA_BOOTSTRAP).")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: PARLEY_KAFKA_BOOTSTRAP).")
@click.option("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def ingest(corpus: Path, index_dir: Path, tenant: str, embedder: str, max_doc_bytes: int,
           publish: bool, bootstrap: str | None, threads: int, progress: bool) -> None:
    """Chunk, embed and index documents; report every rejected one."""

    with _errors_as_click():
        tqdm = require("tqdm", extra="train", purpose="parley kb ingest").tqdm
        docs: list[Document] = []
        rejected = 0
        for item in load_corpus(corpus, default_tenant=tenant, max_bytes=max_doc_bytes):
            if isinstance(item, DocumentRejected):
                rejected += 1
                click.echo(f"rejected: {item}", err=True)
            else:
                docs.append(item)
        if not docs:
            raise click.ClickException(f"no document of {corpus} can be ingested "
                                       f"({rejected} rejected)")
        if (index_dir / "manifest.json").is_file():
            knowledge = KnowledgeBase.open(index_dir, threads=threads)
        else:
            knowledge = KnowledgeBase.create(index_dir, embedder=embedder, threads=threads)
        with tqdm(total=len(docs), unit="doc", desc="embedding", disable=not progress,
                  file=sys.stderr) as bar:
            changes = knowledge.upsert_many(docs, on_batch=bar.update)
        knowledge.save()
        published = ""
        if publish:
            pub, topic = _publisher(bootstrap)
            for doc in docs:
                pub.publish(doc)
            pub.flush()
            published = f"; published {len(docs)} to {topic}"
    chunks = sum(s["chunks"] for s in knowledge.stats().values())
    click.echo(f"indexed {changes.upserted} documents ({changes.unchanged} unchanged, "
               f"{rejected} rejected) into {index_dir}: {chunks} passages, "
               f"embedder {knowledge.embedder.kind}{published}")


@kb.command()
@click.option("--index", "index_dir", type=_INDEX, help="Index folder to remove it from.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--doc-id", required=True)
@click.option("--publish/--no-publish", default=False, show_default=True,
              help="Publish a tombstone to kb.documents (every worker drops it).")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: PARLEY_KAFKA_BOOTSTRAP).")
def delete(index_dir: Path | None, tenant: str, doc_id: str, publish: bool,
           bootstrap: str | None) -> None:
    """Delete one document."""
    if index_dir is None and not publish:
        raise click.UsageError("give --index, --publish, or both")
    with _errors_as_click():
        if index_dir is not None:
            knowledge = KnowledgeBase.open(index_dir)
            found = knowledge.delete(tenant, doc_id)
            knowledge.save()
            click.echo(f"{'deleted' if found else 'not in the index:'} {tenant}:{doc_id}")
        if publish:
            pub, topic = _publisher(bootstrap)
            pub.delete(tenant, doc_id)
            pub.flush()
            click.echo(f"published a tombstone for {tenant}:{doc_id} to {topic}")


@kb.command()
@click.option("--index", "index_dir", type=_INDEX, required=True)
@click.option("--tenant", default="default", show_default=True)
@click.option("-k", "k", type=int, default=5, show_default=True)
@click.option("--filter", "filters", multiple=True, help="Metadata filter KEY=VALUE.")
@click.argument("question")
def query(index_dir: Path, tenant: str, k: int, filters: tuple[str, ...], question: str) -> None:
    """Print the best passages for QUESTION."""
    parsed = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--filter")
        parsed[key] = value
    with _errors_as_click():
        knowledge = KnowledgeBase.open(index_dir)
        for hit in knowledge.search(tenant, question, k=k, filters=parsed or None):
            click.echo(f"{hit.score:.3f}  {hit.doc_id}  {hit.title}")
            click.echo(f"       {hit.text[:160]}")


@kb.command()
@click.option("--index", "index_dir", type=_INDEX, required=True)
@click.option("--queries", "queries_file", type=_EXISTING_FILE, required=True,
              help="JSON lines {id, text}.")
@click.option("--qrels", "qrels_file", type=_EXISTING_FILE, required=True,
              help="TSV query_id<TAB>doc_id<TAB>grade.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(index_dir: Path, queries_file: Path, qrels_file: Path, tenant: str,
             as_json: bool) -> None:
    """Retrieval quality and latency over labelled queries."""
    with _errors_as_click():
        knowledge = KnowledgeBase.open(index_dir, threads=1)
        result = run_evaluation(knowledge, load_queries(queries_file), load_qrels(qrels_file),
                                tenant=tenant)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:<16} {value}")


@kb.command("train-reranker")
@click.option("--index", "index_dir", type=_INDEX, required=True)
@click.option("--queries", "queries_file", type=_EXISTING_FILE, required=True)
@click.option("--qrels", "qrels_file", type=_EXISTING_FILE, required=True)
@click.option("--tenant", default="default", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the weights here instead of into the index.")
def train_reranker(index_dir: Path, queries_file: Path, qrels_file: Path, tenant: str,
                   out: Path | None) -> None:
    """Fit the reranker on labelled queries (keep some queries out to evaluate on)."""
    with _errors_as_click():
        knowledge = KnowledgeBase.open(index_dir)
        reranker = fit_reranker(knowledge, tenant, load_queries(queries_file),
                                load_qrels(qrels_file))
        target = out or index_dir / "reranker.json"
        target.write_text(reranker.to_json())
    click.echo(f"reranker fitted on {reranker.info.get('rows')} candidates -> {target}")
