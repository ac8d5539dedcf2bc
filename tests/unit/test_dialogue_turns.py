"""The dialogue agent's decision for a batch: sessions carried forward, what each event sends."""

from __future__ import annotations

import logging

import pytest

from agents.dialogue.policy import ReplyContent, Response, RuleBasedPolicy
from agents.dialogue.sessions import Session
from agents.dialogue.turns import Incoming, decide_turns
from streams.keys import ConversationKeys
from streams.topics import ENVELOPE_FIELDS

A = ConversationKeys("acme", "c-a")
B = ConversationKeys("acme", "c-b")


def message(keys: ConversationKeys, event_id: str, seq: int, text: str = "hi",
            intent: str = "greet", oos: bool = False) -> Incoming:
    """A ChatUnderstood as the agent decodes it."""
    return Incoming(keys, {
        "event_id": event_id, "tenant_id": keys.tenant_id,
        "conversation_id": keys.conversation_id, "user_id": "u1", "channel": "ws", "seq": seq,
        "timestamp": 1_000, "trace_id": f"tr-{event_id}", "reply_route": "gw-1",
        "payload": {"text": text, "client_msg_id": f"m-{event_id}", "intent": intent,
                    "confidence": 0.9, "oos": oos, "ranking": [], "entities": [],
                    "model_version": "v1"},
    }, is_result=False)


def result(keys: ConversationKeys, asked: Incoming, text: str, sources: list[str]) -> Incoming:
    """The knowledge agent's KnowledgeResult for the question in ``asked``."""
    msg = asked.msg
    return Incoming(keys, {
        **{k: msg[k] for k in ENVELOPE_FIELDS}, "event_id": f"{msg['event_id']}.k",
        "payload": {"text": text, "sources": sources, "in_reply_to": msg["event_id"],
                    "client_msg_id": msg["payload"]["client_msg_id"]},
    }, is_result=True)


@pytest.fixture
def policy() -> RuleBasedPolicy:
    return RuleBasedPolicy({"greet": Response(("Hello!",), ("Help",))}, knowledge=True)


def sessions(*keys: ConversationKeys) -> dict[ConversationKeys, Session]:
    """New conversations, as the store loads them."""
    return {k: Session(k) for k in keys}


def test_replies_are_numbered_in_order_per_conversation(policy: RuleBasedPolicy) -> None:
    batch = [message(A, "a1", 4), message(B, "b1", 1), message(A, "a2", 5)]
    loaded = sessions(A, B)
    loaded[A] = Session(A, turns=3, last_seq=3, reply_seq=3, produced_seq=3)

    turns = decide_turns(batch, loaded, set(), {}, policy)

    assert [(t.keys, t.event_id) for t in turns] == [(A, "a1"), (B, "b1"), (A, "a2")]
    assert [(t.session.turns, t.session.last_seq, t.session.reply_seq) for t in turns] == [
        (4, 4, 4), (1, 1, 1), (5, 5, 5)]
    assert all(t.question is None for t in turns)
    assert loaded[A].reply_seq == 3  # the loaded sessions are not changed


def test_a_reply_copies_the_envelope_and_answers_its_message(policy: RuleBasedPolicy) -> None:
    incoming = message(A, "a1", 1)
    (turn,) = decide_turns([incoming], sessions(A), set(), {}, policy)

    reply = turn.reply
    assert reply is not None
    assert {k: reply[k] for k in ("tenant_id", "conversation_id", "user_id", "channel",
                                  "trace_id", "reply_route")} == {
        k: incoming.msg[k] for k in ("tenant_id", "conversation_id", "user_id", "channel",
                                     "trace_id", "reply_route")}
    assert (reply["event_id"], reply["seq"]) == ("a1.r", 1)
    assert reply["payload"] == {"text": "Hello!", "in_reply_to": "a1", "client_msg_id": "m-a1",
                                "quick_replies": ["Help"], "sources": [], "sender": "bot"}


def test_a_knowledge_question_is_asked_and_its_answer_replies_later(
        policy: RuleBasedPolicy) -> None:
    asked = message(A, "a1", 1, "what is an overdraft?", "knowledge_question")
    (turn,) = decide_turns([asked], sessions(A), set(), {}, policy)

    assert turn.reply is None and turn.question is not None
    assert turn.question["event_id"] == "a1" and turn.question["trace_id"] == "tr-a1"
    assert turn.question["payload"] == {"question": "what is an overdraft?",
                                        "client_msg_id": "m-a1", "filters": {}}
    assert (turn.session.turns, turn.session.last_seq, turn.session.reply_seq) == (1, 1, 0)

    answer = result(A, asked, "Spending more than you have.", ["overdraft"])
    (later,) = decide_turns([answer], {A: turn.session}, set(), {}, policy)
    assert later.question is None and later.reply is not None
    assert (later.reply["event_id"], later.reply["seq"]) == ("a1.k.r", 1)
    assert later.reply["payload"]["in_reply_to"] == "a1"  # the user's message, not the result
    assert later.reply["payload"]["sources"] == ["overdraft"]
    assert (later.session.turns, later.session.last_seq, later.session.reply_seq) == (1, 1, 1)


def test_a_cached_answer_is_the_reply_at_once(policy: RuleBasedPolicy) -> None:
    asked = message(A, "a1", 1, "what is an overdraft?", "knowledge_question")
    cached = {"a1": ReplyContent("Spending more than you have.", sources=("overdraft",))}
    (turn,) = decide_turns([asked], sessions(A), set(), cached, policy)

    assert turn.question is None and turn.reply is not None
    assert turn.reply["payload"]["text"] == "Spending more than you have."
    assert turn.reply["payload"]["sources"] == ["overdraft"]
    assert (turn.session.turns, turn.session.reply_seq) == (1, 1)


def test_recorded_and_repeated_events_are_skipped(policy: RuleBasedPolicy) -> None:
    batch = [message(A, "a1", 1), message(A, "a2", 2), message(A, "a2", 2), message(A, "a3", 3)]
    loaded = {A: Session(A, turns=1, last_seq=1, reply_seq=1, produced_seq=1)}

    turns = decide_turns(batch, loaded, {"a1"}, {}, policy)

    assert [(t.event_id, t.session.reply_seq) for t in turns] == [("a2", 2), ("a3", 3)]


def test_each_decision_is_logged_with_its_trace_id_at_debug(
        policy: RuleBasedPolicy, caplog: pytest.LogCaptureFixture) -> None:
    batch = [message(A, "a1", 1), message(B, "b1", 1, "what is an overdraft?", "faq")]
    caplog.set_level(logging.DEBUG, logger="agents.dialogue.turns")
    decide_turns(batch, sessions(A, B), set(), {}, policy)
    assert [(r.getMessage(), r.trace_id) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("dialogue.turn.decided event_id=a1 sends=reply reply_seq=1", "tr-a1"),
        ("dialogue.turn.decided event_id=b1 sends=question reply_seq=0", "tr-b1"),
    ]
