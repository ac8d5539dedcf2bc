"""What the bot says: a rule-based policy over the NLU's result.

Intent → response template from the domain's responses file, entities filled
in; a greeting says hello (and welcome back on later turns). A knowledge
question — or, when a knowledge base is available, anything the NLU marks out
of scope — is handed to the knowledge agent (:class:`AskKnowledge`); without a
knowledge base an out-of-scope message gets an honest "I did not understand".
The choice is deterministic in (session, message), so a reprocessed event
yields the same decision.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.dialogue.sessions import Session
from kernel.settings import Settings

__all__ = ["AskKnowledge", "Decision", "ReplyContent", "RuleBasedPolicy", "load_policy"]

GREETINGS = frozenset({"greet", "greeting", "hello"})
KNOWLEDGE_INTENTS = frozenset({"knowledge_question", "faq"})
FALLBACK = "fallback"  # the response for out-of-scope messages


@dataclass(frozen=True, slots=True)
class ReplyContent:
    text: str
    quick_replies: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AskKnowledge:
    """Answer from the knowledge base; the reply comes back through knowledge.results."""

    question: str


Decision = ReplyContent | AskKnowledge


@dataclass(frozen=True, slots=True)
class Response:
    templates: tuple[str, ...]
    quick_replies: tuple[str, ...] = ()

    def template(self, turn: int, known: Container[str]) -> str:
        """The turn's template among those whose every field is ``known`` ("Let me check
        order {order_id}" only when there is an order id), taken in turn; all of them
        when none is (the missing fields then render blank)."""
        usable = [t for t in self.templates if all(f in known for f in _fields(t))]
        choices = usable or self.templates
        return choices[turn % len(choices)]


@functools.cache
def _fields(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


class _Blank(dict[str, str]):
    """Template fields with no matching entity render as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


class RuleBasedPolicy:
    def __init__(
        self, responses: Mapping[str, Response] | None = None, *, knowledge: bool = False
    ) -> None:
        self.responses = dict(responses or {})
        self.knowledge = knowledge

    @classmethod
    def from_file(cls, path: Path, *, knowledge: bool = False) -> RuleBasedPolicy:
        """Load a domain's responses file::

            {"fallback": {"templates": [...], "quick_replies": [...]},
             "intents": {"greet": {"templates": ["Hello {name}!"], "quick_replies": [...]}}}

        The fallback answers out-of-scope messages.
        """
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))

        def response(spec: Mapping[str, Any]) -> Response:
            return Response(tuple(spec["templates"]), tuple(spec.get("quick_replies", ())))

        responses = {intent: response(spec) for intent, spec in raw["intents"].items()}
        if "fallback" in raw:
            responses[FALLBACK] = response(raw["fallback"])
        return cls(responses, knowledge=knowledge)

    def knowledge_question(self, understood: Mapping[str, Any]) -> str | None:
        """The question to put to the knowledge base, when this message is one."""
        payload = understood["payload"]
        if self.knowledge and (payload["oos"] or payload["intent"] in KNOWLEDGE_INTENTS):
            return str(payload["text"])
        return None

    def respond(self, session: Session, understood: Mapping[str, Any]) -> Decision:
        if (question := self.knowledge_question(understood)) is not None:
            return AskKnowledge(question)
        payload = understood["payload"]
        text: str = payload["text"]
        intent: str = payload["intent"]
        response = self.responses.get(intent)
        if payload["oos"]:
            fallback = self.responses.get(FALLBACK)
            if fallback and fallback.templates:
                return self._render(fallback, session, payload)
            return ReplyContent(
                f"Sorry, I didn't understand \u201c{_clip(text)}\u201d. "
                "Could you say it another way?"
            )
        if response and response.templates:
            return self._render(response, session, payload)
        if intent in GREETINGS:
            again = " again" if session.turns > 0 else ""
            return ReplyContent(f"Hello{again}! I'm Parley. How can I help you today?")
        return ReplyContent(f"You said: {_clip(text)}")

    def _render(
        self, response: Response, session: Session, payload: Mapping[str, Any]
    ) -> ReplyContent:
        fields = _Blank({e["entity"]: e["value"] or e["text"] for e in payload["entities"]})
        fields.setdefault("text", _clip(payload["text"]))
        template = response.template(session.turns, fields)
        rendered = string.Formatter().vformat(template, (), fields)
        return ReplyContent(rendered, response.quick_replies)


def load_policy(settings: Settings, responses: Path) -> RuleBasedPolicy:
    """The policy a worker runs: the bot's ``responses`` file (the composition root passes
    the demo's, ``examples/demo/responses.json``); questions go to the knowledge agent when
    it runs (``PARLEY_KNOWLEDGE``)."""
    return RuleBasedPolicy.from_file(responses, knowledge=settings.knowledge)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
