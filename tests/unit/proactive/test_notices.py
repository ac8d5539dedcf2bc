"""Proactive messages in the dialogue step, without infrastructure: a notice (callback,
business event) is said in its conversation with the next reply seq, its fields filled
from the data; a flow in progress keeps its question; a response the bot does not have
says nothing; business events map to ``utter_event_<type>``; the visits of a batch mark
conversations active and send what waited for the customer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.proactive import Visits
from agents.dialogue.sessions import Session
from agents.dialogue.state import DialogueState
from agents.dialogue.turns import Kind, ManagerFor, decide_turns, notice_incoming
from agents.proactive.agent import pending_notice
from streams.keys import ConversationKeys
from streams.proactive import notice_event
from tests.unit.dialogue.test_turns import DEMO, message

A = ConversationKeys("acme", "c-a")


@pytest.fixture(scope="module")
def demo() -> ManagerFor:
    manager = DialogueManager(load_bot(DEMO))
    return lambda _tenant, _user, _state: manager


def shipped(event_id: str = "ev-1", **data: str) -> Any:
    return notice_incoming(notice_event(
        event_id, A.tenant_id, A.conversation_id, kind="business_event",
        response="utter_event_order_shipped",
        data={"order_id": "12345", "carrier": "DHL", "tracking_number": "JD1", **data},
        user_id="u1", channel="ws", timestamp_ms=5_000))


def test_a_business_event_is_said_with_its_data_and_the_next_reply_seq(
        demo: ManagerFor) -> None:
    session = Session(A, turns=3, last_seq=3, reply_seq=4)
    (turn,) = decide_turns([shipped()], {A: session}, set(), {}, demo)
    assert turn.reply is not None and turn.kind is Kind.NOTICE
    assert turn.reply["payload"]["text"] == \
        "Your order 12345 has shipped with DHL; the tracking number is JD1."
    assert turn.reply["payload"]["response"] == "utter_event_order_shipped"
    assert turn.reply["seq"] == 5 and turn.session.reply_seq == 5
    assert (turn.session.turns, turn.session.last_seq) == (3, 3), "not a user turn"


def test_a_callback_says_the_resolved_ticket(demo: ManagerFor) -> None:
    event = notice_event("cb-1", A.tenant_id, A.conversation_id, kind="callback",
                         response="utter_callback_open_ticket_resolved",
                         data={"ticket_id": "T-9", "resolution": "the app is fixed",
                               "status": "resolved"}, user_id="u1", channel="ws",
                         timestamp_ms=1)
    (turn,) = decide_turns([notice_incoming(event)], {A: Session(A)}, set(), {}, demo)
    assert turn.reply is not None
    assert turn.reply["payload"]["text"] == \
        "Good news: your ticket T-9 is resolved: the app is fixed."


def test_a_notice_mid_form_leaves_the_question_open(demo: ManagerFor) -> None:
    asked = message(A, "m1", 1, "I want to make a complaint", "complaint")
    (first,) = decide_turns([asked], {A: Session(A)}, set(), {}, demo)
    (turn,) = decide_turns([shipped()], {A: first.session}, set(), {}, demo)
    state = DialogueState.from_bytes(turn.session.dialogue)
    assert state.active_flow == "open_ticket"
    assert state.requested_slot == "issue_description"
    (after,) = decide_turns([message(A, "m2", 2, "the app crashes on statements")],
                            {A: turn.session}, set(), {}, demo)
    assert DialogueState.from_bytes(after.session.dialogue).requested_slot == "email"


def test_a_type_the_bot_does_not_announce_says_nothing(demo: ManagerFor) -> None:
    event = notice_event("ev-9", A.tenant_id, A.conversation_id, kind="business_event",
                         response="utter_event_parcel_teleported", data={}, user_id="u1",
                         channel="ws", timestamp_ms=1)
    (turn,) = decide_turns([notice_incoming(event)], {A: Session(A, reply_seq=2)}, set(),
                           {}, demo)
    assert turn.reply is None and turn.session.reply_seq == 2


def test_a_repeated_notice_is_said_once(demo: ManagerFor) -> None:
    turns = decide_turns([shipped(), shipped()], {A: Session(A)}, {"other"}, {}, demo)
    assert len(turns) == 1
    assert decide_turns([shipped()], {A: Session(A)}, {"ev-1"}, {}, demo) == []


def test_notice_data_that_is_not_an_object_is_refused() -> None:
    event = notice_event("x", "acme", "c", kind="callback", response="r", data={},
                         timestamp_ms=1)
    with pytest.raises(ValueError, match="JSON object"):
        notice_incoming({**event, "data_json": "[1]"})


def test_a_business_event_maps_to_its_types_response() -> None:
    notice = pending_notice({"event_id": "e1", "tenant_id": "acme", "customer_id": "u7",
                             "type": "payment_failed", "data": {"amount": "5 EUR"},
                             "timestamp": 1})
    assert notice["response"] == "utter_event_payment_failed"
    assert notice["data"] == {"amount": "5 EUR", "event_type": "payment_failed"}
    with pytest.raises(ValueError, match="event type"):
        pending_notice({"event_id": "e1", "tenant_id": "acme", "customer_id": "u7",
                        "type": "../../etc", "data": {}, "timestamp": 1})
    with pytest.raises(ValueError, match="customer id"):
        pending_notice({"event_id": "e1", "tenant_id": "acme", "customer_id": "u 7",
                        "type": "x", "data": {}, "timestamp": 1})


class FakeIndex:
    open_s = 3600

    def __init__(self, waiting: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        self.waiting = waiting
        self.touched: list[tuple[str, str, str, int]] = []

    async def touch(self, tenant: str, customer: str, conversation: str,
                    now_ms: int) -> list[dict[str, Any]]:
        self.touched.append((tenant, customer, conversation, now_ms))
        return self.waiting.pop((tenant, customer), [])


@pytest.mark.asyncio
async def test_a_visit_marks_the_conversation_and_sends_what_waited(demo: ManagerFor) -> None:
    waiting = pending_notice({"event_id": "e1", "tenant_id": "acme", "customer_id": "u1",
                              "type": "order_shipped", "data": {"order_id": "7"},
                              "timestamp": 1})
    index = FakeIndex({("acme", "u1"): [json.loads(json.dumps(waiting))]})
    sent: list[tuple[str, dict[str, Any]]] = []

    async def publish(notices: Any) -> None:
        sent.extend(notices)

    first, second = message(A, "m1", 1, timestamp=10), message(A, "m2", 2, timestamp=20)
    turns = decide_turns([first, second], {A: Session(A)}, set(), {}, demo)
    await Visits(index, publish)(turns, [True, True],  # type: ignore[arg-type]
                                 {m.msg["event_id"]: m.msg for m in (first, second)})
    assert index.touched == [("acme", "u1", "c-a", 20)], "one touch per conversation"
    ((conversation, notice),) = sent
    assert conversation == "c-a" and notice["event_id"] == "e1.c-a"
    assert notice["response"] == "utter_event_order_shipped"
    assert json.loads(notice["data_json"])["order_id"] == "7"


@pytest.mark.asyncio
async def test_turns_not_recorded_mark_nothing(demo: ManagerFor) -> None:
    index = FakeIndex({})
    first = message(A, "m1", 1)
    turns = decide_turns([first], {A: Session(A)}, set(), {}, demo)

    async def publish(notices: Any) -> None:
        raise AssertionError("nothing to send")

    await Visits(index, publish)(turns, [False],  # type: ignore[arg-type]
                                 {"m1": first.msg})
    assert index.touched == []


@pytest.mark.asyncio
async def test_a_conversation_marked_moments_ago_is_not_marked_again(demo: ManagerFor) -> None:
    index, now = FakeIndex({}), [100.0]

    async def publish(notices: Any) -> None:
        pass

    visits = Visits(index, publish, clock=lambda: now[0])  # type: ignore[arg-type]
    for seq, at in ((1, 100.0), (2, 130.0), (3, 161.0)):
        now[0] = at
        msg = message(A, f"m{seq}", seq, timestamp=seq)
        turns = decide_turns([msg], {A: Session(A)}, set(), {}, demo)
        await visits(turns, [True], {msg.msg["event_id"]: msg.msg})
    assert [t[3] for t in index.touched] == [1, 3]  # not again within a minute
