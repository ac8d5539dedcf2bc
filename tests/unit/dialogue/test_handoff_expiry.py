"""A request for a person nobody takes in time (issue 33 §3): the expiry sweep's summary
of the request (:func:`agents.dialogue.handoff.request_summary`), and the demo bot's
``pattern_handoff_expired``, which opens a ticket with it and tells the user the ticket's
number only after the CRM answered with one; on any failure it says no ticket was opened.
The CRM itself is faked by the actions' results here (tests/e2e/test_handoff_expiry.py
has the real one). And the timeout a bot sets, which tests need in seconds."""

from __future__ import annotations

from typing import Any

import pytest

from agents.dialogue.handoff import SUMMARY_MAX_CHARS, request_summary
from agents.dialogue.loader import BotFolderError, load_bot
from agents.dialogue.manager import (
    HANDOFF_SUMMARY_SLOT,
    ActionResult,
    CallAction,
    DialogueManager,
    Outcome,
)
from agents.dialogue.state import DialogueState
from streams.handoff import HandoffRecord, TranscriptLine
from tests.unit.dialogue.conftest import BASE, WriteBot
from tests.unit.dialogue.test_handoff import Conversation, reply
from tests.unit.dialogue.test_turns import DEMO

SUMMARY = 'Asked for a person (pattern_human_handoff); nobody was free. The user said: "hi".'


def record(reason: str = "pattern_human_handoff (intent: human_handoff)",
           slots: dict[str, Any] | None = None, said: tuple[str, ...] = ()) -> HandoffRecord:
    lines = tuple(TranscriptLine(f"l{i}", role, text, i) for i, (role, text) in enumerate(
        [x for t in said for x in (("user", t), ("bot", "a bot line"))]))
    return HandoffRecord("c1", "r1", "u1", "ws", reason, slots or {}, 1, transcript=lines)


def test_a_summary_says_why_what_the_user_said_and_the_details() -> None:
    text = request_summary(record(
        slots={"order_id": "12345", "amount": {"value": 50, "currency": "EUR"},
               "parley_degradation_level": 2},
        said=("where is my order 12345", "I want to  talk\nto a human")))
    assert text == ('Asked for a person (pattern_human_handoff (intent: human_handoff)); '
                    'nobody was free. The user said: "where is my order 12345" / '
                    '"I want to talk to a human". Details given: amount: 50 EUR, '
                    'order_id: 12345.')


def test_a_summary_without_a_transcript_or_slots_still_names_the_reason() -> None:
    assert request_summary(record(reason="")) == \
        "Asked for a person (no reason given); nobody was free."


def test_a_long_summary_keeps_the_latest_messages_within_the_limit() -> None:
    long = request_summary(record(said=tuple(f"message {n} " + "x" * 500 for n in range(9))))
    assert len(long) <= SUMMARY_MAX_CHARS
    assert "message 8" in long and "message 0" not in long
    one = request_summary(record(said=("y" * 10_000,)))
    assert len(one) == SUMMARY_MAX_CHARS and one.endswith('…".')


@pytest.fixture(scope="module")
def manager() -> DialogueManager:
    return DialogueManager(load_bot(DEMO))


def expired(manager: DialogueManager, summary: str = SUMMARY) -> tuple[Conversation, Any]:
    chat = Conversation(lambda _t, _u, _s: manager)
    chat.user("I want to talk to a human", "human_handoff")
    return chat, chat.console("expired", "", text=summary)


def resume(manager: DialogueManager, state: DialogueState, name: str, ok: bool = True,
           kind: str | None = None, **outputs: Any) -> Outcome:
    return manager.resume_action(state, ActionResult(name, ok, outputs,
                                                     None if ok else "no", kind), 9_000_000)


def test_the_demo_opens_a_ticket_and_gives_its_number_once_the_crm_answered(
        manager: DialogueManager) -> None:
    chat, turn = expired(manager)
    assert turn.reply is None, "nothing is said before the CRM answered"
    assert turn.action is not None and turn.action["payload"]["action"] == "customer_contact"
    assert not chat.state.handoff and chat.state.slots[HANDOFF_SUMMARY_SLOT] == SUMMARY

    contact = resume(manager, chat.state, "customer_contact", email="ann@example.com")
    assert contact.utterances == ()
    assert contact.request == CallAction(
        "open_handoff_ticket", {"handoff_summary": SUMMARY, "email": "ann@example.com"})

    opened = resume(manager, contact.state, "open_handoff_ticket", ticket_id="T-1A2B3C4D")
    (said,) = opened.utterances
    assert said.response == "utter_handoff_expired_ticket"
    assert "T-1A2B3C4D" in said.text and "ann@example.com" in said.text
    state = opened.state
    assert state.pending is None and state.active_flow is None and not state.handoff
    assert HANDOFF_SUMMARY_SLOT not in state.slots and "email" not in state.slots


@pytest.mark.parametrize(("action", "kind"), [
    ("customer_contact", "unavailable"), ("customer_contact", "failed"),
    ("open_handoff_ticket", "unavailable"), ("open_handoff_ticket", "timeout"),
    ("open_handoff_ticket", "failed"), ("open_handoff_ticket", "invalid_inputs")])
def test_no_ticket_is_claimed_when_the_crm_did_not_open_one(
        manager: DialogueManager, action: str, kind: str) -> None:
    chat, _ = expired(manager)
    state = chat.state
    if action == "open_handoff_ticket":
        state = resume(manager, state, "customer_contact", email="ann@example.com").state
    failed = resume(manager, state, action, ok=False, kind=kind)
    (said,) = failed.utterances
    assert said.response == "utter_handoff_expired_no_ticket"
    assert "couldn't open a ticket" in said.text and "ticket T-" not in said.text
    assert failed.request is None and failed.state.pending is None
    assert HANDOFF_SUMMARY_SLOT not in failed.state.slots
    assert failed.state.active_flow is None and not failed.state.handoff


def test_a_bot_without_the_slot_or_the_override_just_says_so(write_bot: WriteBot) -> None:
    plain = DialogueManager(load_bot(write_bot(
        intents_yml=BASE["intents.yml"] + "  human_handoff:\n    examples:\n"
        + "\n".join(f"      - a person please {n}" for n in range(12)) + "\n",
        flows_yml=BASE["flows.yml"] + "  human_handoff:\n    start:\n"
        "      intents: [human_handoff]\n    steps:\n      - link: pattern_human_handoff\n")))
    chat, turn = expired(plain)
    assert reply(turn)["response"] == "utter_handoff_expired"
    assert turn.action is None and HANDOFF_SUMMARY_SLOT not in chat.state.slots


@pytest.mark.parametrize(("minutes", "seconds"), [("0.05", 3), ("0.001", 1), ("2", 120)])
def test_the_timeout_may_be_a_fraction_of_a_minute(write_bot: WriteBot, minutes: str,
                                                   seconds: int) -> None:
    bot = load_bot(write_bot(bot_yml=f"name: t\nhandoff:\n  timeout_minutes: {minutes}\n"))
    assert bot.settings.handoff_timeout_s == seconds


@pytest.mark.parametrize("minutes", ["0", "-1", ".inf", ".nan", "soon", "true"])
def test_a_timeout_that_is_no_positive_number_is_refused_at_its_line(
        write_bot: WriteBot, minutes: str) -> None:
    with pytest.raises(BotFolderError) as refused:
        load_bot(write_bot(bot_yml=f"name: t\nhandoff:\n  timeout_minutes: {minutes}\n"))
    assert "bot.yml:3: 'timeout_minutes' must be a" in str(refused.value)


def test_an_expiry_without_a_summary_opens_no_ticket_and_says_so(
        manager: DialogueManager) -> None:
    """An expiry published by an older worker (no summary): the ticket action's required
    input is missing, so its call fails and the user is told no ticket was opened."""
    chat, _ = expired(manager, summary="")
    assert HANDOFF_SUMMARY_SLOT not in chat.state.slots
    contact = resume(manager, chat.state, "customer_contact", email="ann@example.com")
    assert isinstance(contact.request, CallAction)
    assert contact.request.inputs["handoff_summary"] is None  # the registry refuses it:
    refused = resume(manager, contact.state, "open_handoff_ticket", ok=False,
                     kind="invalid_inputs")
    assert [u.response for u in refused.utterances] == ["utter_handoff_expired_no_ticket"]


@pytest.mark.parametrize("minutes", ["0", "-5", ".inf", ".nan"])
def test_a_session_timeout_that_is_no_positive_number_is_refused_at_its_line(
        write_bot: WriteBot, minutes: str) -> None:
    with pytest.raises(BotFolderError) as refused:
        load_bot(write_bot(bot_yml=f"name: t\nsession_timeout_minutes: {minutes}\n"))
    assert "bot.yml:2: 'session_timeout_minutes' must be a number more than 0" in str(
        refused.value)
