"""The knowledge documents a published bot brings for its tenant."""

from __future__ import annotations

import json
from pathlib import Path

from agents.bots.bundle import bundle_from_folders
from agents.bots.knowledge import knowledge_documents, previous_document_ids
from tests.unit.bots.test_bundle import make_bot


def write_knowledge(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        {"id": "delivery", "title": "How long is delivery?", "text": "Three to five days."},
        {"id": "foreign", "title": "Other tenant", "text": "Not ours.", "tenant": "globex"},
        {"id": "empty", "title": "Empty", "text": ""},
        {"id": "delivery", "title": "Again", "text": "A second document with the same id."},
    ]
    (folder / "faq.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (folder / "hours.md").write_text("# Opening hours\n\nNine to five, Monday to Friday.\n")


def test_documents_are_published_for_the_tenant_only(tmp_path: Path) -> None:
    write_knowledge(tmp_path / "knowledge")
    documents, problems = knowledge_documents(tmp_path / "knowledge", "acme")
    assert sorted(d.id for d in documents) == ["delivery", "hours"]
    assert all(d.tenant == "acme" for d in documents)
    assert any("names tenant 'globex': not published for 'acme'" in p for p in problems)
    assert any(p.startswith("document empty (faq.jsonl:3) rejected") for p in problems)
    assert any("document delivery (faq.jsonl:4) has the id of faq.jsonl:1" in p
               for p in problems)
    assert len(problems) == 3


def test_a_bot_without_knowledge_has_no_documents(tmp_path: Path) -> None:
    assert knowledge_documents(tmp_path / "knowledge", "acme") == ([], [])


def test_the_previous_versions_documents_are_read_from_its_files(tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path)
    write_knowledge(bot / "knowledge")
    bundle = bundle_from_folders("acme", bot, model)
    # make_bot's knowledge/faq.md, plus the two valid documents written here
    assert previous_document_ids(bundle.files, "acme") == {"delivery", "faq", "hours"}
