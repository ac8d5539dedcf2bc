"""A turn's dialogue state on its replies, for bot testers only, and the end-of-turn mark
(streams/turn_state.py): what the dialogue step attaches and what the gateway shows."""

from __future__ import annotations

import json
from typing import Any

from agents.actions.records import action_result
from agents.actions.registry import ActionOutcome
from agents.dialogue.state import DialogueState
from agents.dialogue.turns import Incoming, Kind, ManagerFor, decide_turns
from gateway.protocol import reply_frame
from gateway.session import ChatSession
from streams.codecs import AvroCodec
from streams.turn_state import BOT_TESTER_ROLE, read_turn_debug
from tests.unit.dialogue.test_turns import A, demo, knowledge, message, sessions, state

__all__ = ["demo"]  # the fixture, shared with test_turns


def as_tester(incoming: Incoming, *roles: str) -> Incoming:
    """The same message from a sender with these verified roles."""
    incoming.msg["payload"]["roles"] = list(roles)
    return incoming


def shown(reply: dict[str, Any], *, with_state: bool) -> dict[str, Any]:
    """The reply frame a client gets, after the reply went through the topic's codec."""
    codec = AvroCodec("bot_reply")
    frame: dict[str, Any] = json.loads(reply_frame(codec.decode(codec.encode(reply)),
                                                   with_state=with_state))
    return frame


def test_a_bot_testers_reply_carries_the_state_after_the_turn(demo: ManagerFor) -> None:
    incoming = as_tester(message(A, "a1", 1, "where is my order?", "order_status"),
                         "agent", BOT_TESTER_ROLE)
    (turn,) = decide_turns([incoming], sessions(A), set(), {}, demo)

    assert turn.reply is not None
    after = state(turn.session)
    assert after.requested_slot == "order_id"  # the turn asked for the order number
    frame = shown(turn.reply, with_state=True)
    assert frame["turn_end"] is True
    assert frame["state"] == {"slots": dict(after.slots), "active_flow": after.active_flow,
                              "requested_slot": "order_id"}
    assert "state" not in shown(turn.reply, with_state=False)  # a connection that did not ask


def test_a_normal_users_reply_has_no_state_even_on_a_connection_that_asks(
        demo: ManagerFor) -> None:
    for roles in ((), ("agent",), ("Bot_Tester",)):
        incoming = as_tester(message(A, "a1", 1, "where is my order?", "order_status"), *roles)
        (turn,) = decide_turns([incoming], sessions(A), set(), {}, demo)
        assert turn.reply is not None
        assert "debug_json" not in turn.reply["payload"], roles
        frame = shown(turn.reply, with_state=True)
        assert "state" not in frame and frame["turn_end"] is True
        assert not state(turn.session).tester


def test_a_turn_that_waits_ends_at_the_reply_after_the_result(demo: ManagerFor) -> None:
    for tester in (True, False):
        roles = (BOT_TESTER_ROLE,) if tester else ()
        asked = as_tester(message(A, "a1", 1, "what is an overdraft?", "knowledge_question"),
                          *roles)
        (turn,) = decide_turns([asked], sessions(A), set(), {}, demo)
        assert turn.question is not None
        if turn.reply is not None:  # something said while it waits is not the turn's end
            assert not turn.reply["payload"]["turn_end"]

        answer = knowledge(A, asked, "Spending more than you have.", ["overdraft"])
        (later,) = decide_turns([answer], {A: turn.session}, set(), {}, demo)
        assert later.reply is not None
        frame = shown(later.reply, with_state=True)
        assert frame["turn_end"] is True
        assert ("state" in frame) is tester  # the result's reply: only the tester's turn
        if tester:
            after = state(later.session)
            assert frame["state"]["active_flow"] == after.active_flow


def test_the_next_message_decides_again_whether_the_state_is_shown(demo: ManagerFor) -> None:
    """A tester's flag does not stick to the conversation: each message's roles count."""
    (first,) = decide_turns([as_tester(message(A, "a1", 1), BOT_TESTER_ROLE)],
                            sessions(A), set(), {}, demo)
    assert state(first.session).tester
    (second,) = decide_turns([message(A, "a2", 2, timestamp=2_000)], {A: first.session},
                             set(), {}, demo)
    assert second.reply is not None and "debug_json" not in second.reply["payload"]
    assert not state(second.session).tester


def test_the_tester_flag_survives_the_stored_state() -> None:
    assert DialogueState.from_bytes(DialogueState(tester=True).to_bytes()).tester
    assert b"bt" not in DialogueState().to_bytes()  # nothing stored for everyone else


def test_a_session_that_did_not_ask_never_shows_state() -> None:
    reply = {"event_id": "e.r", "seq": 1, "payload": {
        "text": "Which order?", "client_msg_id": "m1", "turn_end": True,
        "debug_json": '{"state":{"slots":{"order_id":null},"active_flow":"t",'
                      '"requested_slot":"x"},"utterances":[]}'}}
    (plain,) = ChatSession().on_replies([reply])
    (debug,) = ChatSession(with_state=True).on_replies([reply])
    assert "state" not in json.loads(plain) and json.loads(plain)["turn_end"] is True
    assert json.loads(debug)["state"] == {"slots": {"order_id": None}, "active_flow": "t",
                                          "requested_slot": "x"}


def test_unreadable_state_is_left_out_not_fatal() -> None:
    for bad in ("", "{not json", "[1, 2]", '{"state": 3}', '{"state": {}, "utterances": 1}'):
        assert read_turn_debug(bad) is None, bad
    reply = {"event_id": "e.r", "seq": 1,
             "payload": {"text": "hi", "client_msg_id": "m1", "debug_json": "{oops"}}
    assert json.loads(reply_frame(reply, with_state=True))["text"] == "hi"


def test_a_reply_lists_its_utterances_and_the_slots_a_finished_flow_let_go(
        demo: ManagerFor) -> None:
    """"where is my order 12345": the number is taken, the CRM asked, the flow ends; the
    tester still sees order_id, as the in-process runner does."""
    asked = as_tester(message(A, "a1", 1, "where is my order 12345", "order_status"),
                      BOT_TESTER_ROLE)
    asked.msg["payload"]["entities"] = [{"entity": "order_id", "start": 18, "end": 23,
                                         "text": "12345", "value": "12345", "source": "model"}]
    (turn,) = decide_turns([asked], sessions(A), set(), {}, demo)
    assert turn.action is not None
    outcome = ActionOutcome(turn.action["payload"]["action"], True, {"order_status": "shipped"})
    done = Incoming(A, action_result(turn.action, outcome, now_ms=2_000), Kind.ACTION)
    (later,) = decide_turns([done], {A: turn.session}, set(), {}, demo)
    assert later.reply is not None
    frame = shown(later.reply, with_state=True)
    assert frame["state"]["slots"]["order_id"] == "12345"
    assert frame["state"]["slots"]["order_status"] == "shipped"
    assert [u["response"] for u in frame["utterances"]][-1] == frame["response"]
    assert "\n\n".join(u["text"] for u in frame["utterances"] if u["text"]) == frame["text"]
