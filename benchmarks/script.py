"""What the simulated users say: short scripted conversations.

Every conversation cycles through four turns — a greeting, a banking or shop
question, a follow-up and thanks. Texts come from the demo bot's training
examples (``examples/demo/intents.yml``) when it is there, otherwise from
the built-in lists below, so the bench runs on any checkout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agents.nlu.data import load_examples
from examples import DEMO

__all__ = ["ConversationScript", "load_script"]

_GREETINGS = (
    "hi", "hello there", "good morning", "hey, anyone there?", "hello!",
)  # fmt: skip
_QUESTIONS = (
    "my card has not arrived yet",
    "how do I activate my new card?",
    "I want to check my account balance",
    "can I change the PIN of my card?",
    "where is my order?",
    "how do I return an item I bought last week?",
    "I was charged twice for the same purchase",
    "what is the exchange rate for euros?",
    "I lost my card, please block it",
    "how long does a bank transfer take?",
)
_FOLLOW_UPS = (
    "how long will that take?",
    "is there a fee for that?",
    "can I do it from the app?",
    "and what if it still doesn't work?",
    "ok, what do I need to do next?",
)
_THANKS = ("thanks!", "thank you, bye", "great, thanks a lot", "cheers", "that's all, goodbye")

_GREET_RE = re.compile(r"greet|hello|welcome")
_THANKS_RE = re.compile(r"thank|bye|goodbye")
_SKIP_RE = re.compile(r"^(oos|out_of_scope|fallback|nlu_fallback|affirm|deny|chitchat)$")


@dataclass(frozen=True)
class ConversationScript:
    """The turns of one conversation; each turn has alternative texts."""

    turns: tuple[tuple[str, ...], ...]
    source: str = "built-in"
    names: tuple[str, ...] = ("greeting", "question", "follow-up", "thanks")

    def __post_init__(self) -> None:
        if not self.turns or not all(self.turns):
            raise ValueError("a conversation script needs at least one turn, each with a text")

    def text(self, conversation: int, message: int) -> str:
        """What conversation ``conversation`` says in its ``message``-th message."""
        cycle, turn = divmod(message, len(self.turns))
        options = self.turns[turn]
        return options[(conversation * 7919 + cycle * 104729) % len(options)]

    def turn_name(self, message: int) -> str:
        turn = message % len(self.turns)
        return self.names[turn] if turn < len(self.names) else f"turn-{turn}"

    def all_texts(self) -> list[str]:
        return [text for turn in self.turns for text in turn]


def load_script(nlu_file: Path | None = None) -> ConversationScript:
    """The demo bot's texts arranged as conversations, or the built-in script."""
    path = DEMO.nlu if nlu_file is None else nlu_file
    builtin = ConversationScript((_GREETINGS, _QUESTIONS, _FOLLOW_UPS, _THANKS))
    if not path.is_file():
        if nlu_file is not None:
            raise FileNotFoundError(f"no such NLU examples file: {path}")
        return builtin
    greetings: list[str] = []
    questions: list[str] = []
    thanks: list[str] = []
    for text, intent in _labelled_texts(path):
        if not text or not isinstance(intent, str) or _SKIP_RE.match(intent):
            continue
        if _GREET_RE.search(intent):
            greetings.append(text)
        elif _THANKS_RE.search(intent):
            thanks.append(text)
        else:
            questions.append(text)
    return ConversationScript(
        (
            tuple(greetings) or _GREETINGS,
            tuple(questions) or _QUESTIONS,
            _FOLLOW_UPS,
            tuple(thanks) or _THANKS,
        ),
        source=str(path),
    )


def _labelled_texts(path: Path) -> Iterator[tuple[str, object]]:
    """``(text, intent)`` of every example: a bot's intents file, or JSON lines (an NLU++
    line's first intent)."""
    if path.suffix in (".yml", ".yaml"):
        yield from ((e.text.strip(), e.intent) for e in load_examples([path]))
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            example = json.loads(line)
            yield (str(example.get("text", "")).strip(),
                   example.get("intent") or next(iter(example.get("intents") or []), ""))
