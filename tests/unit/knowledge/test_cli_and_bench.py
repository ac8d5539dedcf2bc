from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.knowledge.cli import kb
from agents.knowledge.documents import Document
from agents.knowledge.publisher import document_record
from benchmarks.kb import build_synthetic_index, run_kb_bench
from streams.codecs import AvroCodec

from .faq_data import FAQ


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": i, "title": t, "text": x, "metadata": m}) for i, t, x, m in FAQ]
    lines.insert(2, json.dumps({"id": "blank", "title": "Nothing", "text": "  "}))
    lines.insert(4, json.dumps({"id": "huge", "title": "Big", "text": "word " * 5000}))
    lines.insert(5, json.dumps({"id": "bin", "title": "Blob", "text": "\x00\x01PNG"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ingest_rejects_bad_documents_and_indexes_the_rest(corpus: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    result = CliRunner().invoke(kb, ["ingest", "--corpus", str(corpus), "--index", str(index),
                                     "--embedder", "wordllama", "--max-doc-bytes", "10000",
                                     "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "rejected: document blank (corpus.jsonl:3) rejected: empty text" in result.output
    assert "rejected: document huge (corpus.jsonl:5) rejected: too large" in result.output
    assert "rejected: document bin (corpus.jsonl:6) rejected: binary content" in result.output
    assert f"indexed 6 documents (0 unchanged, 3 rejected) into {index}" in result.output
    again = CliRunner().invoke(kb, ["ingest", "--corpus", str(corpus), "--index", str(index),
                                    "--max-doc-bytes", "10000", "--no-progress"])
    assert "indexed 0 documents (6 unchanged, 3 rejected)" in again.output

    queried = CliRunner().invoke(kb, ["query", "--index", str(index), "-k", "2",
                                      "my card was declined"])
    assert queried.exit_code == 0 and "card-declined" in queried.output.splitlines()[0]

    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q1", "text": "I forgot my password"}\n'
                       '{"id": "q2", "text": "refund duration"}\n')
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\treset-password\t1\nq2\trefund-time\t1\n")
    evaluated = CliRunner().invoke(kb, ["evaluate", "--index", str(index), "--queries",
                                        str(queries), "--qrels", str(qrels), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.output)
    assert set(metrics) == {"n", "hit_at_1", "hit_at_5", "hit_at_10", "mrr_at_10",
                            "ndcg_at_10", "latency_ms_p50", "latency_ms_p99"}
    assert metrics["n"] == 2 and metrics["hit_at_1"] == 1.0

    deleted = CliRunner().invoke(kb, ["delete", "--index", str(index), "--doc-id",
                                      "refund-time"])
    assert "deleted default:refund-time" in deleted.output


def test_ingest_of_nothing_usable_fails_clearly(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("not json\n")
    result = CliRunner().invoke(kb, ["ingest", "--corpus", str(corpus), "--index",
                                     str(tmp_path / "i"), "--no-progress"])
    assert result.exit_code == 1
    assert "no document of" in result.output and "(1 rejected)" in result.output


def test_evaluate_on_a_missing_index_says_so(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text("")
    (tmp_path / "r.tsv").write_text("")
    result = CliRunner().invoke(kb, ["evaluate", "--index", str(tmp_path), "--queries",
                                     str(tmp_path / "q.jsonl"), "--qrels",
                                     str(tmp_path / "r.tsv")])
    assert result.exit_code == 1 and "no manifest.json" in result.output


def test_synthetic_index_and_bench(tmp_path: Path) -> None:
    info = build_synthetic_index(tmp_path / "synth", chunks=300, embedder="wordllama")
    assert info["chunks"] == 300
    result = run_kb_bench(tmp_path / "synth", ["how do I reset my password", "fees"], 0.3)
    assert result["chunks"] == 300 and result["queries"] > 10 and result["threads"] == 1
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"]


def test_kb_document_record_round_trips_through_avro() -> None:
    doc = Document(id="a/b", title="T", text="x", tenant="t1", metadata={"k": "v"})
    codec = AvroCodec("kb_document")
    decoded = codec.decode(codec.encode(document_record(doc, updated_at_ms=1_700_000_000_000)))
    assert decoded["doc_id"] == "a/b" and decoded["metadata"] == {"k": "v"}
    assert decoded["content_hash"] == doc.content_hash


@pytest.mark.parametrize(
    "module",
    [f"knowledge.{name}" for name in (
        "agent", "answer", "breaker", "cache", "chunking", "cli", "demo", "documents",
        "errors", "evaluate", "follower", "generation", "index", "knowledge_base", "lexical",
        "llm", "publisher", "rerank", "service", "settings", "threads", "training",
    )] + ["encoders.embedder", "encoders.errors", "encoders.onnx_graphs"],
)
def test_every_module_declares_its_public_api(module: str) -> None:
    mod = importlib.import_module(f"agents.{module}")
    assert mod.__all__, module
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_package_reexports_the_service_api() -> None:
    import agents.knowledge as package

    for name in ("Answer", "KnowledgeService", "KnowledgeBase", "KnowledgeSettings",
                 "KbDocumentsFollower", "register_knowledge_agent", "CircuitBreaker"):
        assert name in package.__all__ and hasattr(package, name)
