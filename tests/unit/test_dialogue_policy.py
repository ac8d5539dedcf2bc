"""The rule-based policy: what the bot says for an understood message."""

from __future__ import annotations

from typing import Any

import pytest

from agents.dialogue.policy import (
    AskKnowledge,
    ReplyContent,
    Response,
    RuleBasedPolicy,
    load_policy,
)
from agents.dialogue.sessions import Session
from examples import DEMO
from kernel.settings import Settings
from streams.keys import ConversationKeys

KEYS = ConversationKeys("acme", "c1")


def understood(text: str, intent: str, *, oos: bool = False,
               entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"event_id": "e1", "payload": {"text": text, "intent": intent, "oos": oos,
                                          "entities": entities or []}}


def session(turns: int = 0) -> Session:
    return Session(KEYS, turns=turns)


@pytest.fixture
def policy() -> RuleBasedPolicy:
    return RuleBasedPolicy({
        "card_lost": Response(("Card {card} blocked.", "Blocked {card} again."), ("Order a card",)),
        "fallback": Response(("Sorry, I can help with cards.",)),
    }, knowledge=True)


def test_a_known_intent_renders_its_template_with_entities(policy: RuleBasedPolicy) -> None:
    msg = understood("I lost my visa", "card_lost",
                     entities=[{"entity": "card", "value": "", "text": "visa"}])
    assert policy.respond(session(), msg) == ReplyContent("Card visa blocked.", ("Order a card",))
    assert policy.respond(session(turns=1), msg).text == "Blocked visa again."  # type: ignore[union-attr]


def test_a_missing_entity_leaves_a_blank_not_an_error(policy: RuleBasedPolicy) -> None:
    """Only when every template needs it: see the next test."""
    reply = policy.respond(session(), understood("I lost my card", "card_lost"))
    assert reply == ReplyContent("Card  blocked.", ("Order a card",))


def test_templates_whose_entities_are_missing_are_passed_over() -> None:
    policy = RuleBasedPolicy({"order_status": Response((
        "Let me check order {order_id}.", "What's the order number?", "Which order, {text}?"))})
    no_id = understood("where is my order", "order_status")
    assert [policy.respond(session(turns), no_id).text  # type: ignore[union-attr]
            for turns in range(3)] == [
        "What's the order number?", "Which order, where is my order?", "What's the order number?"]
    with_id = understood("where is order A123", "order_status",
                         entities=[{"entity": "order_id", "value": "A123", "text": "A123"}])
    assert policy.respond(session(0), with_id).text == "Let me check order A123."  # type: ignore[union-attr]


def test_every_demo_intent_can_answer_without_its_entities() -> None:
    """So no demo reply has a blank where an entity was not found."""
    policy = load_policy(Settings.from_env({}), DEMO.responses)
    for intent, response in policy.responses.items():
        for turns in range(len(response.templates)):
            reply = policy.respond(session(turns), understood("hello there", intent))
            if isinstance(reply, ReplyContent):
                assert "  " not in reply.text and " ." not in reply.text, (intent, reply.text)


@pytest.mark.parametrize("intent, oos", [("knowledge_question", False), ("card_lost", True)])
def test_knowledge_questions_and_out_of_scope_go_to_the_knowledge_base(
        policy: RuleBasedPolicy, intent: str, oos: bool) -> None:
    msg = understood("what is an overdraft?", intent, oos=oos)
    assert policy.knowledge_question(msg) == "what is an overdraft?"
    assert policy.respond(session(), msg) == AskKnowledge("what is an overdraft?")


def test_without_a_knowledge_base_out_of_scope_gets_the_fallback() -> None:
    policy = RuleBasedPolicy({"fallback": Response(("Sorry, I can help with cards.",))})
    msg = understood("what is the meaning of life", "oos", oos=True)
    assert policy.knowledge_question(msg) is None
    assert policy.respond(session(), msg) == ReplyContent("Sorry, I can help with cards.")


def test_greetings_and_unknown_intents_have_built_in_replies() -> None:
    policy = RuleBasedPolicy()
    assert "Hello!" in policy.respond(session(), understood("hi", "greet")).text  # type: ignore[union-attr]
    assert "Hello again!" in policy.respond(session(turns=3), understood("hi", "greet")).text  # type: ignore[union-attr]
    assert policy.respond(session(), understood("blue", "colour")) == ReplyContent("You said: blue")


def test_the_demo_domain_answers_every_intent_it_declares() -> None:
    policy = RuleBasedPolicy.from_file(DEMO.responses, knowledge=True)
    for intent in policy.responses:
        reply = policy.respond(session(), understood("text", intent, oos=intent == "oos"))
        assert isinstance(reply, AskKnowledge) or reply.text, intent


@pytest.mark.parametrize("knowledge", [True, False])
def test_the_workers_policy_is_the_demo_domains(knowledge: bool) -> None:
    policy = load_policy(Settings.from_env({"PARLEY_KNOWLEDGE": "1" if knowledge else "0"}),
                         DEMO.responses)
    assert policy.knowledge is knowledge
    assert policy.responses == RuleBasedPolicy.from_file(DEMO.responses).responses
