"""The dialogue step's decision for a batch: sessions (with their dialogue state) carried
forward, and what each event sends — a reply, a knowledge request, an action request."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.actions.records import action_result, read_result
from agents.actions.registry import ActionOutcome, FailureKind
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.sessions import Session
from agents.dialogue.state import DialogueState
from agents.dialogue.turns import Answer, Incoming, Kind, ManagerFor, decide_turns
from streams.keys import ConversationKeys
from streams.topics import ENVELOPE_FIELDS
from tests.unit.dialogue.conftest import WriteBot
from tests.unit.dialogue.test_manager import ACTION_FILES

A = ConversationKeys("acme", "c-a")
B = ConversationKeys("acme", "c-b")
DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"


def message(keys: ConversationKeys, event_id: str, seq: int, text: str = "hi",
            intent: str = "greet", oos: bool = False, confidence: float = 0.95,
            timestamp: int = 1_000) -> Incoming:
    """A ChatUnderstood as the agent decodes it."""
    return Incoming(keys, {
        "event_id": event_id, "tenant_id": keys.tenant_id,
        "conversation_id": keys.conversation_id, "user_id": "u1", "channel": "ws", "seq": seq,
        "timestamp": timestamp, "trace_id": f"tr-{event_id}", "reply_route": "gw-1",
        "payload": {"text": text, "client_msg_id": f"m-{event_id}", "intent": intent,
                    "confidence": confidence, "oos": oos, "ranking": [], "entities": [],
                    "model_version": "v1"},
    }, Kind.MESSAGE)


def knowledge(keys: ConversationKeys, asked: Incoming, text: str,
              sources: list[str]) -> Incoming:
    """The knowledge agent's KnowledgeResult for the question in ``asked``."""
    msg = asked.msg
    return Incoming(keys, {
        **{k: msg[k] for k in ENVELOPE_FIELDS}, "event_id": f"{msg['event_id']}.k",
        "timestamp": msg["timestamp"] + 50,
        "payload": {"text": text, "sources": sources, "in_reply_to": msg["event_id"],
                    "client_msg_id": msg["payload"]["client_msg_id"]},
    }, Kind.KNOWLEDGE)


@pytest.fixture(scope="module")
def demo() -> ManagerFor:
    manager = DialogueManager(load_bot(DEMO))
    return lambda _tenant, _user, _state: manager


def sessions(*keys: ConversationKeys) -> dict[ConversationKeys, Session]:
    """New conversations, as the store loads them."""
    return {k: Session(k) for k in keys}


def state(session: Session) -> DialogueState:
    return DialogueState.from_bytes(session.dialogue)


def test_replies_are_numbered_in_order_per_conversation(demo: ManagerFor) -> None:
    batch = [message(A, "a1", 4), message(B, "b1", 1), message(A, "a2", 5)]
    loaded = sessions(A, B)
    loaded[A] = Session(A, turns=3, last_seq=3, reply_seq=3, produced_seq=3)

    turns = decide_turns(batch, loaded, set(), {}, demo)

    assert [(t.keys, t.event_id) for t in turns] == [(A, "a1"), (B, "b1"), (A, "a2")]
    assert [(t.session.turns, t.session.last_seq, t.session.reply_seq) for t in turns] == [
        (4, 4, 4), (1, 1, 1), (5, 5, 5)]
    assert all(t.question is None and t.action is None for t in turns)
    assert state(turns[2].session).version > state(turns[0].session).version
    assert loaded[A].reply_seq == 3  # the loaded sessions are not changed


def test_a_reply_copies_the_envelope_and_names_its_response(demo: ManagerFor) -> None:
    incoming = message(A, "a1", 1)
    (turn,) = decide_turns([incoming], sessions(A), set(), {}, demo)

    reply = turn.reply
    assert reply is not None
    assert {k: reply[k] for k in ENVELOPE_FIELDS if k not in ("event_id", "seq",
                                                              "timestamp")} == {
        k: incoming.msg[k] for k in ENVELOPE_FIELDS if k not in ("event_id", "seq",
                                                                 "timestamp")}
    assert (reply["event_id"], reply["seq"]) == ("a1.r", 1)
    payload = reply["payload"]
    assert payload["text"] and payload["response"] == "utter_greet"
    assert (payload["in_reply_to"], payload["client_msg_id"]) == ("a1", "m-a1")


def test_a_form_goes_on_across_batches_from_the_stored_state(demo: ManagerFor) -> None:
    """The complaint this replaces: "where is my order?" -> "What's the order number?"
    -> "12345" -> the same question again."""
    (asked,) = decide_turns([message(A, "a1", 1, "where is my order?", "order_status")],
                            sessions(A), set(), {}, demo)
    assert state(asked.session).requested_slot == "order_id"
    (answered,) = decide_turns([message(A, "a2", 2, "12345", "oos", oos=True, confidence=0.2,
                                        timestamp=2_000)],
                               {A: asked.session}, set(), {}, demo)
    # the number is taken: the flow goes on to look the order up in the CRM
    assert answered.action is not None and answered.action["payload"]["action"] == "order_status"
    assert state(answered.session).slots["order_id"] == "12345"
    assert state(answered.session).requested_slot is None


def test_a_knowledge_question_is_asked_and_its_answer_replies_later(
        demo: ManagerFor) -> None:
    asked = message(A, "a1", 1, "what is an overdraft?", "knowledge_question")
    (turn,) = decide_turns([asked], sessions(A), set(), {}, demo)

    assert turn.question is not None and turn.action is None
    assert turn.question["event_id"] == "a1" and turn.question["trace_id"] == "tr-a1"
    assert turn.question["payload"] == {"question": "what is an overdraft?",
                                        "client_msg_id": "m-a1", "filters": {}}
    assert state(turn.session).pending is not None

    answer = knowledge(A, asked, "Spending more than you have.", ["overdraft"])
    (later,) = decide_turns([answer], {A: turn.session}, set(), {}, demo)
    assert later.question is None and later.reply is not None
    assert later.reply["event_id"] == "a1.k.r"
    assert later.reply["seq"] == turn.session.reply_seq + 1
    assert later.reply["payload"]["in_reply_to"] == "a1"  # the user's message, not the result
    assert "Spending more than you have." in later.reply["payload"]["text"]
    assert later.reply["payload"]["sources"] == ["overdraft"]
    assert state(later.session).pending is None
    assert later.session.turns == turn.session.turns  # an answer is not a user turn


def test_a_cached_answer_is_the_reply_at_once(demo: ManagerFor) -> None:
    asked = message(A, "a1", 1, "what is an overdraft?", "knowledge_question")
    cached = {"a1": Answer("Spending more than you have.", ("overdraft",))}
    (turn,) = decide_turns([asked], sessions(A), set(), cached, demo)

    assert turn.question is None and turn.reply is not None
    assert "Spending more than you have." in turn.reply["payload"]["text"]
    assert turn.reply["payload"]["sources"] == ["overdraft"]
    assert state(turn.session).pending is None


def test_an_action_is_requested_and_only_its_success_is_reported(
        write_bot: WriteBot) -> None:
    bot = DialogueManager(load_bot(write_bot(**ACTION_FILES)))

    def manager(_tenant: str, _user: str, _state: DialogueState) -> DialogueManager:
        return bot
    asked = message(A, "a1", 1, "where is order 12345", "order_status")
    (turn,) = decide_turns([asked], sessions(A), set(), {}, manager)
    assert turn.reply is None and turn.question is None and turn.action is not None
    request = turn.action
    assert request["event_id"] == "a1.c" and request["payload"]["action"] == "lookup_order"
    assert request["conversation_id"] == A.conversation_id

    def result(outcome: ActionOutcome) -> Incoming:
        event = action_result(request, outcome, now_ms=2_000)
        read_result(event)
        return Incoming(A, event, Kind.ACTION)

    failed = ActionOutcome.failure("lookup_order", FailureKind.TIMEOUT, "timed out", 10)
    (bad,) = decide_turns([result(failed)], {A: turn.session}, set(), {}, manager)
    assert bad.reply is not None and "nothing changed" in bad.reply["payload"]["text"]

    ok = ActionOutcome("lookup_order", True, {"status": "shipped"})
    (good,) = decide_turns([result(ok)], {A: turn.session}, set(), {}, manager)
    assert good.reply is not None and good.reply["payload"]["text"] == "Order 12345 is shipped."


def test_the_clock_is_the_events_own_as_avro_decodes_it(demo: ManagerFor) -> None:
    decoded = message(A, "a1", 1)
    decoded.msg["timestamp"] = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # timestamp-millis
    (turn,) = decide_turns([decoded], sessions(A), set(), {}, demo)
    assert state(turn.session).last_activity_ms == 1_796_644_800_000


def test_recorded_and_repeated_events_are_skipped(demo: ManagerFor) -> None:
    batch = [message(A, "a1", 1), message(A, "a2", 2), message(A, "a2", 2), message(A, "a3", 3)]
    loaded = {A: Session(A, turns=1, last_seq=1, reply_seq=1, produced_seq=1)}

    turns = decide_turns(batch, loaded, {"a1"}, {}, demo)

    assert [(t.event_id, t.session.reply_seq) for t in turns] == [("a2", 2), ("a3", 3)]


def test_a_state_whose_flow_the_serving_version_lacks_leaves_it(
        demo: ManagerFor, write_bot: WriteBot) -> None:
    """A conversation recorded mid-form on a version this worker no longer holds goes on
    with the current version instead of failing on a flow it does not have."""
    (asked,) = decide_turns([message(A, "a1", 1, "where is my order?", "order_status")],
                            sessions(A), set(), {}, demo)
    assert state(asked.session).active_flow == "track_order"
    other = DialogueManager(load_bot(write_bot(
        flows_yml="flows: {}\n", responses_yml="responses:\n  utter_hi:\n    - Hi.\n")))
    (later,) = decide_turns([message(A, "a2", 2, timestamp=2_000)], {A: asked.session}, set(),
                            {}, lambda _tenant, _user, _state: other)
    assert state(later.session).active_flow != "track_order"


def test_an_unreadable_state_starts_afresh(demo: ManagerFor,
                                          caplog: pytest.LogCaptureFixture) -> None:
    damaged = {A: Session(A, turns=1, last_seq=1, reply_seq=1, dialogue=b'{"s": 99}')}
    (turn,) = decide_turns([message(A, "a2", 2)], damaged, set(), {}, demo)
    assert turn.reply is not None
    assert "dialogue.state.unreadable" in caplog.text


def test_each_decision_is_logged_with_its_trace_id_at_debug(
        demo: ManagerFor, caplog: pytest.LogCaptureFixture) -> None:
    batch = [message(A, "a1", 1),
             message(B, "b1", 1, "what is an overdraft?", "knowledge_question")]
    caplog.set_level(logging.DEBUG, logger="agents.dialogue.turns")
    decide_turns(batch, sessions(A, B), set(), {}, demo)
    logged = [(r.getMessage().split(" reply_seq")[0], r.trace_id)  # type: ignore[attr-defined]
              for r in caplog.records]
    assert [trace for _, trace in logged] == ["tr-a1", "tr-b1"]
    assert "waits_for=-" in logged[0][0] and "waits_for=AskKnowledge" in logged[1][0]
