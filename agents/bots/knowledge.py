"""A published bot's knowledge documents, sent to ``kb.documents`` under its tenant.

Workers answer knowledge questions from the index they build out of the
compacted ``kb.documents`` topic, per tenant (agents/knowledge/follower.py), not
from files in a bot folder. So ``parley bot publish`` also publishes the
documents of the bot's ``knowledge/`` folder (``.jsonl`` files, and Markdown,
HTML and text files) to that topic under the tenant it publishes for, and
deletes (tombstones) the documents the tenant's previous published version had
and this one has not. Documents ingested for the tenant by other means
(``parley kb ingest --publish``) are left alone.

A document that names another tenant is not published: a bot publishes for one
tenant only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from agents.bots.bundle import BOT_PREFIX
from agents.knowledge.documents import FOLDER_SUFFIXES, Document, load_corpus
from agents.knowledge.errors import DocumentRejected

__all__ = ["KNOWLEDGE_FOLDER", "bundle_documents", "knowledge_documents",
           "previous_document_ids"]

#: The folder of a bot that holds its knowledge documents.
KNOWLEDGE_FOLDER = "knowledge"


def knowledge_documents(folder: Path, tenant: str) -> tuple[list[Document], list[str]]:
    """The documents of a bot's ``knowledge/`` ``folder`` for ``tenant``, and every
    problem found (one line each: a document rejected, another tenant's, an id twice)."""
    if not folder.is_dir():
        return [], []
    sources: list[Path] = sorted(folder.rglob("*.jsonl"))
    if any(p.suffix.lower() in FOLDER_SUFFIXES for p in folder.rglob("*") if p.is_file()):
        sources.append(folder)  # the Markdown, HTML and text files, read as a folder
    documents: dict[str, Document] = {}
    problems: list[str] = []
    for source in sources:
        for item in load_corpus(source, default_tenant=tenant):
            if isinstance(item, DocumentRejected):
                problems.append(str(item))
            elif item.tenant != tenant:
                problems.append(f"document {item.id} ({item.source}) names tenant "
                                f"{item.tenant!r}: not published for {tenant!r}")
            elif item.id in documents:
                problems.append(f"document {item.id} ({item.source}) has the id of "
                                f"{documents[item.id].source}: the first is published")
            else:
                documents[item.id] = item
    return list(documents.values()), problems


def bundle_documents(files: Mapping[str, bytes], tenant: str
                     ) -> tuple[list[Document], list[str]]:
    """The knowledge documents in a published version's ``files`` (a canary being
    promoted publishes them then), and every problem found."""
    prefix = f"{BOT_PREFIX}/{KNOWLEDGE_FOLDER}/"
    with tempfile.TemporaryDirectory(prefix="parley-bot-") as tmp:
        root = Path(tmp)
        for path, data in files.items():
            if path.startswith(prefix):
                target = root.joinpath(*path[len(prefix):].split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        return knowledge_documents(root, tenant)


def previous_document_ids(files: Mapping[str, bytes], tenant: str) -> set[str]:
    """The ids of the knowledge documents in a published version's ``files``."""
    documents, _ = bundle_documents(files, tenant)
    return {doc.id for doc in documents}
