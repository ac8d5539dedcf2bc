from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.knowledge.documents import (
    Document,
    html_to_text,
    load_corpus,
    markdown_to_text,
    validate_document,
)
from agents.knowledge.errors import DocumentRejected
from agents.knowledge.publisher import parse_record_key, record_key


def test_valid_document_is_normalised() -> None:
    doc = validate_document({"id": " a1 ", "title": "  Reset   password ", "text": " Do X. ",
                             "tenant": "acme", "metadata": {"n": 3, "ok": True}})
    assert doc == Document(id="a1", title="Reset password", text="Do X.", tenant="acme",
                           metadata={"n": "3", "ok": "true"})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"title": "t", "text": "x"}, "missing \"id\""),
        ({"id": "a", "title": "t", "text": "   "}, "empty text"),
        ({"id": "a", "title": "t"}, "missing \"text\""),
        ({"id": "a", "text": "x\x00y"}, "binary content"),
        ({"id": "a", "text": "\x01\x02\x03\x04 abc \x05\x06"}, "binary or non-text"),
        ({"id": "a", "text": "x" * 2000}, "too large: 2000 bytes"),
        ({"id": "a", "text": "x", "metadata": {"k": {"nested": 1}}}, "metadata value of 'k'"),
        ({"id": "a", "text": "x", "metadata": [1]}, "metadata must be a JSON object"),
        ({"id": "a", "text": "x", "tenant": "bad tenant!"}, "invalid tenant id"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_bad_documents_are_rejected_with_a_reason(raw: object, reason: str) -> None:
    with pytest.raises(DocumentRejected) as info:
        validate_document(raw, source="corpus.jsonl:7", max_bytes=1000)
    assert reason in str(info.value)
    assert "corpus.jsonl:7" in str(info.value)


def test_jsonl_corpus_yields_rejections_and_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    lines = [
        json.dumps({"id": "ok1", "title": "One", "text": "first"}),
        "{not json",
        json.dumps({"id": "empty", "title": "Two", "text": ""}),
        "",
        json.dumps({"id": "ok2", "title": "Three", "text": "third", "tenant": "t2"}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe binary line\n")
    items = list(load_corpus(path))
    accepted = [i for i in items if isinstance(i, Document)]
    rejected = [str(i) for i in items if isinstance(i, DocumentRejected)]
    assert [d.id for d in accepted] == ["ok1", "ok2"]
    assert accepted[1].tenant == "t2"
    assert len(rejected) == 3
    assert "corpus.jsonl:2" in rejected[0] and "invalid JSON" in rejected[0]
    assert "document empty" in rejected[1] and "empty text" in rejected[1]
    assert "not UTF-8" in rejected[2]


def test_folder_corpus_reads_markdown_and_html_and_rejects_binary(tmp_path: Path) -> None:
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "reset.md").write_text(
        "---\nlayout: x\n---\n# Reset your password\n\nOpen **Settings** and click "
        "[Reset](http://x).\n\n- step one\n- step two\n")
    (tmp_path / "fees.html").write_text(
        "<html><head><title>Fees</title><style>p{}</style></head><body><h1>Fees</h1>"
        "<p>Transfers cost 1&#37;.</p><script>alert(1)</script></body></html>")
    (tmp_path / "logo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "empty.html").write_text("<html><body><script>x()</script></body></html>")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    items = list(load_corpus(tmp_path, default_tenant="acme"))
    docs = {i.id: i for i in items if isinstance(i, Document)}
    rejected = {i.doc_id: i.reason for i in items if isinstance(i, DocumentRejected)}
    assert set(docs) == {"guides/reset", "fees"}
    assert docs["guides/reset"].title == "Reset your password"
    assert "Open Settings and click Reset." in docs["guides/reset"].text
    assert "step one" in docs["guides/reset"].text and "layout" not in docs["guides/reset"].text
    assert docs["fees"].title == "Fees" and "Transfers cost 1%." in docs["fees"].text
    assert "alert" not in docs["fees"].text
    assert docs["fees"].tenant == "acme"
    assert rejected == {"logo": "binary content (NUL bytes)", "empty": "empty text"}


def test_markup_helpers() -> None:
    assert markdown_to_text("## Title ##\ntext with `code` and _em_")[0] == "Title"
    assert markdown_to_text("plain")[1] == "plain"
    title, text = html_to_text("<h1>Head</h1><div>a<br>b</div>")
    assert title == "Head" and text.split() == ["Head", "a", "b"]


def test_content_hash_tracks_indexed_content() -> None:
    a = Document(id="x", title="T", text="body")
    assert a.content_hash == Document(id="x", title="T", text="body", source="else").content_hash
    assert a.content_hash != Document(id="x", title="T", text="body2").content_hash
    assert a.content_hash != Document(id="x", title="T", text="body",
                                      metadata={"k": "v"}).content_hash


def test_record_keys_name_the_tenant_and_the_document() -> None:
    assert record_key("acme", "a1") == b"acme:a1"
    assert parse_record_key(b"acme:faq:a1") == ("acme", "faq:a1")  # ids may hold a colon
    assert parse_record_key(b"no-tenant") is None
