"""Grounded generation: prompts from files, context within a token budget,
model tiering, and validation of what the model wrote.

* Prompt templates live in ``prompts/*.txt`` (``string.Template`` syntax, so
  braces in documents are harmless): ``system.txt``, ``answer.txt`` and
  ``passage.txt`` (how one retrieved passage is shown).
* :func:`build_context` adds passages best first until the token budget is
  spent; a passage that does not fit is cut at a sentence boundary if at
  least a useful part fits, otherwise skipped.
* :func:`choose_model` sends short, simple questions to the small model and
  the rest (long, multi-part, comparisons, "why/how does") to the large one.
* :func:`validate_output` accepts an answer only if it cites at least one
  source id that was in the context and no id that was not; ``NO_ANSWER``
  becomes a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

from agents.knowledge.errors import LLMMalformedOutput
from agents.knowledge.index import Hit

__all__ = [
    "NO_ANSWER",
    "Context",
    "ValidatedAnswer",
    "build_context",
    "build_messages",
    "choose_model",
    "estimate_tokens",
    "load_prompt",
    "validate_output",
]

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
NO_ANSWER = "NO_ANSWER"
_CITATION = re.compile(r"\[([^\[\]\n]{1,256})\]")
_COMPLEX = re.compile(
    r"\b(why|compare|comparison|difference|differences|versus|vs\.?|explain|pros|cons|"
    r"step[- ]by[- ]step|troubleshoot|trade-?offs?)\b",
    re.IGNORECASE,
)


@cache
def load_prompt(name: str) -> Template:
    path = PROMPT_DIR / f"{name}.txt"
    return Template(path.read_text(encoding="utf-8"))


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (≈ 4 characters or 0.75 words per token, the larger)."""
    return max(len(text) // 4, int(len(text.split()) / 0.75)) + 1


@dataclass(frozen=True)
class Context:
    text: str
    doc_ids: tuple[str, ...]
    tokens: int


def build_context(hits: Sequence[Hit], budget_tokens: int) -> Context:
    passage = load_prompt("passage")
    parts: list[str] = []
    ids: list[str] = []
    used = 0
    for hit in hits:
        block = passage.safe_substitute(doc_id=hit.doc_id, title=hit.title, text=hit.text)
        cost = estimate_tokens(block)
        if used + cost > budget_tokens:
            room = budget_tokens - used
            if room < 40:
                continue
            sentences = re.split(r"(?<=[.!?])\s+", hit.text)
            kept = ""
            for sentence in sentences:
                candidate = f"{kept} {sentence}".strip()
                trial = passage.safe_substitute(doc_id=hit.doc_id, title=hit.title,
                                                text=candidate)
                if estimate_tokens(trial) > room:
                    break
                kept = candidate
            if not kept:
                continue
            block = passage.safe_substitute(doc_id=hit.doc_id, title=hit.title, text=kept)
            cost = estimate_tokens(block)
        parts.append(block.strip())
        ids.append(hit.doc_id)
        used += cost
    return Context(text="\n\n".join(parts), doc_ids=tuple(ids), tokens=used)


def build_messages(question: str, context: Context, *, tenant: str) -> list[dict[str, str]]:
    example = context.doc_ids[0] if context.doc_ids else "doc-1"
    system = load_prompt("system").safe_substitute(tenant=tenant, example_id=example)
    user = load_prompt("answer").safe_substitute(context=context.text, question=question)
    return [{"role": "system", "content": system.strip()},
            {"role": "user", "content": user.strip()}]


def choose_model(question: str, *, small: str, large: str, small_max_words: int) -> str:
    """Tiering: the small model for short, simple questions; the large one otherwise."""
    if not small:
        return large
    if not large:
        return small
    words = len(question.split())
    multi_part = question.count("?") > 1 or bool(re.search(r"\b(and also|as well as)\b",
                                                           question, re.IGNORECASE))
    if words <= small_max_words and not multi_part and not _COMPLEX.search(question):
        return small
    return large


@dataclass(frozen=True)
class ValidatedAnswer:
    text: str
    sources: tuple[str, ...]
    refusal: bool = False


def validate_output(text: str, context_ids: Sequence[str], *, max_chars: int = 4000
                    ) -> ValidatedAnswer:
    """Accept a grounded, cited answer; raise :class:`LLMMalformedOutput` otherwise."""
    answer = text.strip()
    if not answer:
        raise LLMMalformedOutput("empty answer")
    if answer.strip(" .\"'`").upper() == NO_ANSWER:
        return ValidatedAnswer("", (), refusal=True)
    if len(answer) > max_chars:
        raise LLMMalformedOutput(f"answer of {len(answer)} characters (limit {max_chars})")
    allowed = set(context_ids)
    cited: list[str] = []
    for match in _CITATION.finditer(answer):
        for doc_id in (part.strip() for part in match.group(1).split(",")):
            if doc_id not in allowed:
                raise LLMMalformedOutput(f"cites {doc_id[:60]!r}, which was not in the context")
            if doc_id not in cited:
                cited.append(doc_id)
    if not cited:
        raise LLMMalformedOutput("the answer cites no source")
    return ValidatedAnswer(answer, tuple(cited))
