from __future__ import annotations

import pytest

from agents.knowledge.answer import REFUSAL_TEXT, Answer, excerpt, extractive_answer, refusal
from agents.knowledge.errors import LLMMalformedOutput
from agents.knowledge.generation import (
    build_context,
    build_messages,
    choose_model,
    estimate_tokens,
    validate_output,
)
from agents.knowledge.index import Hit


def hit(doc_id: str, text: str, score: float = 0.9, title: str = "Title") -> Hit:
    return Hit(doc_id=doc_id, chunk_no=0, title=title, text=text, score=score)


def test_context_respects_the_token_budget_best_first() -> None:
    hits = [hit("a", "Alpha fact. " * 10), hit("b", "Beta fact. " * 10),
            hit("c", "Gamma fact. " * 200)]
    ctx = build_context(hits, budget_tokens=120)
    assert ctx.doc_ids[:2] == ("a", "b")
    assert ctx.tokens <= 120
    assert "[a] Title" in ctx.text
    small = build_context(hits, budget_tokens=45)
    assert small.doc_ids == ("a",) and small.tokens <= 45
    assert build_context(hits, budget_tokens=10).doc_ids == ()


def test_context_cuts_a_long_passage_at_sentence_boundaries() -> None:
    text = " ".join(f"Sentence {i} has words." for i in range(100))
    ctx = build_context([hit("long", text)], budget_tokens=60)
    assert ctx.doc_ids == ("long",)
    assert ctx.text.endswith(".") and ctx.tokens <= 60


def test_messages_use_the_prompt_files() -> None:
    ctx = build_context([hit("faq-1", "Open settings {not a placeholder} $dollar.")], 500)
    system, user = build_messages("How?", ctx, tenant="acme")
    assert system["role"] == "system" and "[faq-1]" in system["content"]
    assert "NO_ANSWER" in system["content"] and "acme" in system["content"]
    assert "{not a placeholder} $dollar" in user["content"]
    assert user["content"].rstrip().endswith("Question: How?")


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How do I reset my password?", "small"),
        ("Why was my card declined?", "large"),
        ("What is the difference between a debit and a credit card?", "large"),
        ("Can I change the address? And the delivery date?", "large"),
        ("I moved to another country last month and now my card does not work in shops "
         "and online, what should I do", "large"),
    ],
)
def test_model_tiering(question: str, expected: str) -> None:
    assert choose_model(question, small="small", large="large", small_max_words=14) == expected


def test_tiering_with_one_model() -> None:
    assert choose_model("Why?", small="", large="big", small_max_words=14) == "big"
    assert choose_model("Why?", small="only", large="", small_max_words=14) == "only"


def test_validation_accepts_cited_answers() -> None:
    out = validate_output("Press Reset [a]. It takes an hour [a, b].", ["a", "b", "c"])
    assert out.sources == ("a", "b") and not out.refusal


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty answer"),
        ("Press Reset.", "cites no source"),
        ("Press Reset [zzz].", "'zzz', which was not in the context"),
        ("x [a]" * 2000, r"characters \(limit 4000\)"),
    ],
    ids=["empty", "uncited", "foreign-citation", "too-long"],
)
def test_validation_rejects_ungrounded_answers(text: str, problem: str) -> None:
    with pytest.raises(LLMMalformedOutput, match=problem):
        validate_output(text, ["a"])


def test_validation_turns_no_answer_into_a_refusal() -> None:
    assert validate_output(" NO_ANSWER. ", ["a"]).refusal


def test_extractive_answer_is_labelled_as_an_excerpt() -> None:
    answer = extractive_answer("reset?", [hit("faq-1", "Open settings.", 0.8, "Reset")])
    assert answer.text == 'Here is an excerpt from "Reset" [faq-1]: Open settings.'
    assert answer.sources == ["faq-1"] and answer.mode == "extractive"
    assert answer.confidence == 0.8 and not answer.degraded
    degraded = extractive_answer("reset?", [hit("faq-1", "Open settings.")], degraded=True)
    assert degraded.text.startswith("A generated answer is not available right now.")
    assert "excerpt from" in degraded.text and degraded.degraded


def test_excerpt_prefers_matching_sentences_within_the_limit() -> None:
    passage = " ".join(["Filler sentence about nothing."] * 30
                       + ["Refunds take five days."] + ["More filler text here."] * 30)
    text = excerpt("how long do refunds take", passage, max_chars=120)
    assert "Refunds take five days." in text and len(text) <= 120


def test_answer_json_round_trip_and_refusal() -> None:
    answer = Answer(text="t", sources=["a"], mode="generative", confidence=0.5, model="m")
    assert Answer.from_json(answer.to_json()) == answer
    r = refusal(0.01)
    assert r.mode == "refusal" and r.sources == [] and r.text == REFUSAL_TEXT


def test_token_estimate_grows_with_text() -> None:
    assert estimate_tokens("word " * 100) > estimate_tokens("word " * 10) > 0
