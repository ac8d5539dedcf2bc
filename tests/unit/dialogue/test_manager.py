"""The dialogue manager on the demo bot: every flow and every repair pattern.

Messages carry the intent the NLU would give (the manager is tested without a model);
entities are given where a recogniser would find them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.dialogue.domain import Bot
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import (
    ActionResult,
    AskKnowledge,
    CallAction,
    DialogueManager,
    Outcome,
    UserTurn,
)
from agents.dialogue.state import DialogueState
from tests.unit.dialogue.conftest import WriteBot

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"
T0 = 1_765_000_000_000


@pytest.fixture(scope="module")
def demo() -> Bot:
    return load_bot(DEMO)


def amount_entity(text: str, start: int, end: int, value: str) -> dict[str, Any]:
    return {"entity": "amount", "start": start, "end": end, "text": text[start:end],
            "value": value, "source": "amount"}


@dataclass
class Chat:
    manager: DialogueManager
    state: DialogueState = field(default_factory=DialogueState)
    now: int = T0
    last: Outcome | None = None

    def say(self, text: str, intent: str = "", confidence: float = 0.95, *, oos: bool = False,
            entities: tuple[dict[str, Any], ...] = (),
            ranking: tuple[tuple[str, float], ...] = (), wait_ms: int = 1000) -> Outcome:
        self.now += wait_ms
        turn = UserTurn(text, intent or "oos", confidence if intent else 0.1,
                        oos or not intent, ranking, entities)
        self.last = self.manager.step(self.state, turn, self.now)
        self.state = self.last.state
        return self.last

    def knowledge(self, answer: str, sources: tuple[str, ...] = ("doc",)) -> Outcome:
        self.now += 10
        self.last = self.manager.resume_knowledge(self.state, answer, sources, self.now)
        self.state = self.last.state
        return self.last

    def action(self, result: ActionResult) -> Outcome:
        self.now += 10
        self.last = self.manager.resume_action(self.state, result, self.now)
        self.state = self.last.state
        return self.last

    @property
    def responses(self) -> list[str]:
        assert self.last is not None
        return [u.response for u in self.last.utterances]

    @property
    def text(self) -> str:
        assert self.last is not None
        return " ".join(u.text for u in self.last.utterances)


@pytest.fixture
def chat(demo: Bot) -> Chat:
    return Chat(DialogueManager(demo))


# -- the demo's flows --------------------------------------------------------------------

def test_track_order_asks_for_the_number_then_tracks(chat: Chat) -> None:
    chat.say("where is my order?", "order_status")
    assert chat.responses == ["utter_ask_order_id"]
    assert chat.state.requested_slot == "order_id" and chat.state.active_flow == "track_order"
    out = chat.say("12345")
    assert out.request == CallAction("order_status", {"order_id": "12345"})
    assert chat.responses == []  # nothing is claimed before the CRM answered
    chat.action(ActionResult("order_status", True, {"order_status": "shipped", "carrier": "DHL",
                                                    "estimated_delivery": "2026-12-09"}))
    assert chat.responses == ["utter_order_status"]
    assert "12345 is shipped" in chat.text and "DHL" in chat.text
    assert chat.state.active_flow is None and chat.state.requested_slot is None


def test_track_order_when_the_crm_cannot_be_reached(chat: Chat) -> None:
    chat.say("where is my order 12345?", "order_status")
    chat.action(ActionResult("order_status", False, error="crm: no answer", kind="unavailable"))
    assert chat.responses == ["utter_crm_unavailable"]
    assert "can't reach your account" in chat.text and chat.state.active_flow is None
    chat.say("where is my order 12345?", "order_status")
    chat.action(ActionResult("order_status", False, error="crm answered 404", kind="failed"))
    assert chat.responses == ["utter_order_not_found"]


def test_track_order_takes_the_number_from_the_same_message(chat: Chat) -> None:
    out = chat.say("where is my order 9876543?", "order_status")
    assert out.request == CallAction("order_status", {"order_id": "9876543"})


def test_an_order_number_of_the_wrong_length_is_asked_again(chat: Chat) -> None:
    chat.say("track my order", "order_status")
    chat.say("1234")
    assert chat.responses == ["utter_invalid_value", "utter_ask_order_id"]
    assert chat.state.attempts == {"order_id": 1}
    out = chat.say("123456")
    assert out.request == CallAction("order_status", {"order_id": "123456"})


def test_block_card_confirms_before_anything_and_never_claims_it(chat: Chat) -> None:
    chat.say("I lost my card", "card_lost")
    assert chat.responses == ["utter_ask_confirm_block"]
    assert chat.last is not None and chat.last.request is None
    out = chat.say("yes", "affirm")
    assert out.request is not None and out.request.name == "block_card"
    assert chat.responses == []  # nothing is claimed before the CRM answered
    chat.action(ActionResult("block_card", True, {"blocked_card": "4821, 9034"}))
    assert chat.responses == ["utter_card_blocked"] and "4821, 9034" in chat.text


def test_a_card_block_that_failed_is_never_claimed(chat: Chat) -> None:
    chat.say("I lost my card", "card_lost")
    chat.say("yes", "affirm")
    chat.action(ActionResult("block_card", False, error="crm answered 404", kind="failed"))
    assert chat.responses == ["utter_block_card_failed"] and "NOT blocked" in chat.text


def test_block_card_refused(chat: Chat) -> None:
    chat.say("my credit card was stolen", "card_lost",
             entities=({"entity": "card_type", "start": 3, "end": 9, "text": "credit",
                        "value": "credit", "source": "model"},))
    assert "credit card" in chat.text
    chat.say("no", "deny")
    assert chat.responses == ["utter_block_card_cancelled"]


def test_transfer_fills_two_slots_from_one_message_then_confirms(chat: Chat) -> None:
    text = "send 50 euros to Anna"
    chat.say(text, "transfer_money", entities=(amount_entity(text, 5, 13, "50.00 EUR"),))
    assert chat.responses == ["utter_ask_confirm_transfer"]
    assert chat.state.slots == {"amount": {"value": 50, "currency": "EUR"}, "recipient": "Anna"}
    assert "50 EUR" in chat.text and "Anna" in chat.text
    out = chat.say("yes", "affirm")
    assert out.request == CallAction("send_money", {"amount": {"value": 50, "currency": "EUR"},
                                                    "recipient": "Anna"})
    chat.action(ActionResult("send_money", True, {"payment_reference": "TR-9"}))
    assert chat.responses == ["utter_transfer_sent"]
    assert "50 EUR" in chat.text and "TR-9" in chat.text


def test_transfer_asks_each_missing_slot(chat: Chat) -> None:
    chat.say("I want to send money", "transfer_money")
    assert chat.responses == ["utter_ask_amount"]
    chat.say("300")
    assert chat.state.slots["amount"] == {"value": 300, "currency": "EUR"}
    assert chat.responses == ["utter_ask_recipient"]
    chat.say("Anna")
    assert chat.state.slots["recipient"] == "Anna"
    assert chat.responses == ["utter_ask_confirm_transfer"]


def test_three_slots_from_one_message(chat: Chat) -> None:
    text = "send 50 euros to Anna from my debit card"
    chat.say(text, "transfer_money", entities=(amount_entity(text, 5, 13, "50.00 EUR"),))
    assert chat.state.slots["card_type"] == "debit"
    assert "from your debit card" in chat.text


def test_open_ticket_collects_description_and_email(chat: Chat) -> None:
    chat.say("I want to make a complaint", "complaint")
    assert chat.responses == ["utter_ask_issue_description"]
    chat.say("my parcel arrived broken")
    assert chat.responses == ["utter_ask_email"]
    chat.say("it's ann@example.com")
    assert chat.responses == []  # the ticket is opened in the CRM first
    chat.action(ActionResult("open_ticket", True, {"ticket_id": "T-1234ABCD"}))
    assert chat.responses == ["utter_ticket_opened"]
    assert "T-1234ABCD" in chat.text and "ann@example.com" in chat.text


def test_a_ticket_the_crm_refuses_is_not_claimed_as_opened(chat: Chat) -> None:
    chat.say("I want to make a complaint", "complaint")
    chat.say("my parcel arrived broken")
    chat.say("it's ann@example.com")
    chat.action(ActionResult("open_ticket", False, error="crm answered 422", kind="failed"))
    assert chat.responses == ["utter_ticket_next_steps"]
    assert "ann@example.com" in chat.text and "nothing was sent" in chat.text


def test_handoff_request_sets_the_flag_and_the_bot_then_only_says_a_person_will_reply(
        chat: Chat) -> None:
    chat.say("I want to talk to a human", "human_handoff")
    assert chat.responses == ["utter_handoff"]
    assert chat.state.handoff and chat.last is not None and chat.last.handoff
    chat.say("hello?", "greet")
    assert chat.responses == ["utter_handoff_waiting"] and chat.last.handoff is False
    released = chat.manager.release_handoff(chat.state, chat.now)
    chat.state = released
    chat.say("hello", "greet")
    assert chat.responses == ["utter_greet"]


def test_knowledge_question_goes_to_knowledge(chat: Chat) -> None:
    out = chat.say("what is an overdraft", "knowledge_question")
    assert out.request == AskKnowledge("what is an overdraft") and out.utterances == ()
    chat.knowledge("An overdraft lets you borrow.", ("overdraft",))
    assert chat.last is not None
    assert [(u.response, u.text, u.sources) for u in chat.last.utterances] == [
        ("knowledge_answer", "An overdraft lets you borrow.", ("overdraft",))]


def test_out_of_scope_goes_to_knowledge_when_the_bot_has_documents(chat: Chat) -> None:
    out = chat.say("do you sell gift wrapping")
    assert isinstance(out.request, AskKnowledge)


def test_chitchat_answers_with_its_response(chat: Chat) -> None:
    chat.say("hi", "greet")
    assert chat.responses == ["utter_greet"]
    assert chat.last is not None and chat.last.utterances[0].quick_replies


# -- repair patterns ---------------------------------------------------------------------

def test_correction_changes_the_amount_and_reconfirms(chat: Chat) -> None:
    text = "send 50 euros to Anna"
    chat.say(text, "transfer_money", entities=(amount_entity(text, 5, 13, "50.00 EUR"),))
    chat.say("no, make it 300", "deny", 0.6)
    assert chat.responses == ["utter_corrected", "utter_ask_confirm_transfer"]
    assert chat.state.slots["amount"] == {"value": 300, "currency": "EUR"}
    assert "300 EUR" in chat.last.utterances[1].text if chat.last else False
    out = chat.say("yes", "affirm")
    assert isinstance(out.request, CallAction)
    assert out.request.inputs["amount"] == {"value": 300, "currency": "EUR"}


def test_correction_of_an_earlier_slot_while_another_is_asked(chat: Chat) -> None:
    chat.say("send 50 euros", "transfer_money",
             entities=(amount_entity("send 50 euros", 5, 13, "50.00 EUR"),))
    assert chat.responses == ["utter_ask_recipient"]
    text = "actually 80 euros"
    chat.say(text, "transfer_money", 0.5, entities=(amount_entity(text, 9, 17, "80.00 EUR"),))
    assert chat.responses == ["utter_corrected", "utter_ask_recipient"]
    assert chat.state.slots["amount"]["value"] == 80


def test_knowledge_question_mid_form_is_answered_then_the_form_resumes(chat: Chat) -> None:
    chat.say("send 50 euros", "transfer_money",
             entities=(amount_entity("send 50 euros", 5, 13, "50.00 EUR"),))
    assert chat.state.requested_slot == "recipient"
    out = chat.say("how long does delivery take?", "knowledge_question")
    assert out.request == AskKnowledge("how long does delivery take?")
    assert chat.state.active_flow == "transfer_money"
    chat.knowledge("3 to 5 working days.")
    assert chat.responses == ["knowledge_answer", "utter_resume_flow", "utter_ask_recipient"]
    assert chat.state.requested_slot == "recipient"
    assert chat.state.slots["amount"] == {"value": 50, "currency": "EUR"}
    chat.say("Anna")
    assert chat.responses == ["utter_ask_confirm_transfer"]


def test_another_flow_mid_form_runs_then_the_form_resumes(chat: Chat) -> None:
    chat.say("I want to send money", "transfer_money")
    chat.say("where is my order 12345", "order_status")
    chat.action(ActionResult("order_status", True, {"order_status": "shipped"}))
    assert chat.responses == ["utter_order_status", "utter_resume_flow", "utter_ask_amount"]
    assert chat.state.active_flow == "transfer_money"


def test_chitchat_mid_form_then_the_question_again(chat: Chat) -> None:
    chat.say("track my order", "order_status")
    chat.say("thanks", "thanks")
    assert chat.responses == ["utter_thanks", "utter_ask_order_id"]
    assert chat.state.attempts == {}


def test_forget_it_cancels(chat: Chat) -> None:
    chat.say("I want to send money", "transfer_money")
    chat.say("300")
    chat.say("forget it", "cancel")
    assert chat.responses == ["utter_flow_cancelled"] and "sending money" in chat.text
    assert chat.state.stack == () and chat.state.slots == {}
    assert chat.state.requested_slot is None
    chat.say("forget it", "cancel")
    assert chat.responses == ["utter_nothing_to_cancel"]


def test_two_failed_answers_hand_over(chat: Chat) -> None:
    chat.say("track my order", "order_status")
    chat.say("dunno")
    assert chat.responses == ["utter_invalid_value", "utter_ask_order_id"]
    out = chat.say("no idea at all")
    assert chat.responses == ["utter_handoff"]
    assert out.handoff and chat.state.handoff and chat.state.stack == ()


def test_cannot_handle_asks_to_rephrase_then_hands_over(demo: Bot, write_bot: WriteBot) -> None:
    chat = Chat(DialogueManager(load_bot(write_bot())))  # a bot without documents
    chat.say("blah blah")
    assert chat.responses == ["utter_ask_rephrase"] and not chat.state.handoff
    chat.say("blah again")
    assert chat.responses == ["utter_handoff"] and chat.state.handoff


def test_understood_messages_reset_the_fallback_count(write_bot: WriteBot) -> None:
    chat = Chat(DialogueManager(load_bot(write_bot())))
    chat.say("blah")
    chat.say("where is order 12345", "order_status")
    chat.say("blah")
    assert chat.responses == ["utter_ask_rephrase"] and not chat.state.handoff


def test_two_close_intents_ask_which_one(chat: Chat) -> None:
    ranking = (("cancel_order", 0.45), ("refund_request", 0.42), ("greet", 0.05))
    chat.say("I want my money back for the order", "cancel_order", 0.45, ranking=ranking)
    assert chat.responses == ["utter_clarify"]
    assert chat.last is not None
    assert chat.last.utterances[0].quick_replies == ("cancelling an order", "your refund")
    assert "cancelling an order or your refund" in chat.text
    chat.say("your refund")
    assert chat.responses == ["utter_ask_order_id"] and chat.state.active_flow == "refund_request"


def test_session_timeout_starts_a_new_session(chat: Chat) -> None:
    chat.say("I want to send money", "transfer_money")
    chat.say("300")
    assert chat.state.sessions == 1
    chat.say("hello", "greet", wait_ms=31 * 60 * 1000)
    assert chat.state.sessions == 2
    assert chat.state.slots == {} and chat.state.stack == ()
    assert chat.responses == ["utter_greet"]


def test_session_start_pattern_can_be_overridden(write_bot: WriteBot) -> None:
    folder = write_bot(
        flows_yml="flows:\n  track_order:\n    start:\n      intents: [order_status]\n"
                  "    steps:\n      - collect: order_id\n      - say: utter_order_next\n"
                  "  pattern_session_start:\n    steps:\n      - say: utter_welcome\n",
        responses_yml="responses:\n  utter_ask_order_id:\n    - Number?\n"
                      "  utter_order_next:\n    - See {order_id}.\n"
                      "  utter_welcome:\n    - Welcome to the tiny shop!\n")
    chat = Chat(DialogueManager(load_bot(folder)))
    chat.say("where is my order", "order_status")
    assert chat.responses == ["utter_welcome", "utter_ask_order_id"]
    chat.say("12345")
    assert chat.responses == ["utter_order_next"]


def test_a_pending_request_makes_the_bot_ask_to_wait(chat: Chat) -> None:
    chat.say("what is an overdraft", "knowledge_question")
    chat.say("hello?", "greet")
    assert chat.responses == ["utter_busy"]
    chat.knowledge("It's borrowing.")
    assert chat.responses == ["knowledge_answer"]


def test_state_round_trip_mid_form_resumes_at_the_same_question(demo: Bot, chat: Chat) -> None:
    text = "send 50 euros to Anna"
    chat.say(text, "transfer_money", entities=(amount_entity(text, 5, 13, "50.00 EUR"),))
    stored = chat.state.to_bytes()
    restarted = Chat(DialogueManager(load_bot(DEMO)), DialogueState.from_bytes(stored), chat.now)
    assert restarted.state.requested_slot == "confirm_transfer"
    out = restarted.say("yes", "affirm")
    assert isinstance(out.request, CallAction) and out.request.name == "send_money"


def test_decisions_are_reproducible(demo: Bot) -> None:
    def run() -> list[bytes]:
        chat = Chat(DialogueManager(demo))
        out = []
        for text, intent in [("hi", "greet"), ("hi", "greet"), ("send money", "transfer_money"),
                             ("300", ""), ("Anna", ""), ("no, make it 200", "deny")]:
            chat.say(text, intent)
            out.append(chat.state.to_bytes() + repr(chat.last).encode())
        return out

    assert run() == run()


def test_variants_are_taken_in_turn(chat: Chat) -> None:
    chat.say("hi", "greet")
    first = chat.text
    chat.say("hi", "greet")
    assert chat.text != first


def test_history_is_bounded(chat: Chat) -> None:
    for _ in range(20):
        chat.say("hi", "greet")
    assert len(chat.state.history) == chat.manager.bot.settings.history_turns
    assert chat.state.version == 20


# -- actions -----------------------------------------------------------------------------

ACTION_FLOWS = (
    "flows:\n  track_order:\n    start:\n      intents: [order_status]\n    steps:\n"
    "      - collect: order_id\n      - action: lookup_order\n        outputs: [status]\n"
    "        on_error: utter_lookup_failed\n      - say: utter_status\n")
ACTION_FILES = {
    "actions_yml": "actions:\n  lookup_order:\n    inputs: [order_id]\n    outputs: [status]\n",
    "slots_yml": "slots:\n  order_id:\n    type: pattern\n    pattern: '\\b(\\d{5,10})\\b'\n"
                 "  status:\n    type: text\n",
    "responses_yml": "responses:\n  utter_ask_order_id:\n    - Number?\n"
                     "  utter_status:\n    - Order {order_id} is {status}.\n"
                     "  utter_lookup_failed:\n    - I couldn't look that up; nothing changed.\n",
    "flows_yml": ACTION_FLOWS,
}


def test_an_action_is_called_and_the_flow_waits_for_success(write_bot: WriteBot) -> None:
    chat = Chat(DialogueManager(load_bot(write_bot(**ACTION_FILES))))
    out = chat.say("where is order 12345", "order_status")
    assert out.request == CallAction("lookup_order", {"order_id": "12345"})
    assert out.utterances == ()
    chat.action(ActionResult("lookup_order", True, {"status": "shipped"}))
    assert chat.text == "Order 12345 is shipped."
    assert chat.state.pending is None and chat.state.active_flow is None


def test_a_failed_action_is_never_reported_as_done(write_bot: WriteBot) -> None:
    chat = Chat(DialogueManager(load_bot(write_bot(**ACTION_FILES))))
    chat.say("where is order 12345", "order_status")
    chat.action(ActionResult("lookup_order", False, error="timeout"))
    assert chat.responses == ["utter_lookup_failed"]
    assert chat.state.active_flow is None


@pytest.mark.parametrize(("kind", "said"), [
    ("unknown", "utter_action_outcome_unknown"),  # sent, no answer: maybe done
    ("unavailable", "utter_lookup_failed"),        # no on_unavailable: its on_error
    ("failed", "utter_lookup_failed")])
def test_an_action_whose_outcome_is_unknown_is_never_called_not_done(
        write_bot: WriteBot, kind: str, said: str) -> None:
    chat = Chat(DialogueManager(load_bot(write_bot(**ACTION_FILES))))
    chat.say("where is order 12345", "order_status")
    chat.action(ActionResult("lookup_order", False, error="no answer", kind=kind))
    assert chat.responses == [said]
    if kind == "unknown":
        assert "couldn't confirm whether that went through" in chat.text
        assert "nothing" not in chat.text
    assert chat.state.active_flow is None


def test_a_stale_action_result_changes_nothing(write_bot: WriteBot) -> None:
    chat = Chat(DialogueManager(load_bot(write_bot(**ACTION_FILES))))
    chat.say("where is order 12345", "order_status")
    before = chat.state
    out = chat.action(ActionResult("other_action", True))
    assert out.state == before and out.utterances == ()


def test_a_chat_understood_payload_becomes_a_user_turn(chat: Chat) -> None:
    payload = {"text": "where is my order 12345", "client_msg_id": "c1",
               "intent": "order_status", "confidence": 0.91, "oos": False,
               "ranking": [{"intent": "order_status", "confidence": 0.91},
                           {"intent": "cancel_order", "confidence": 0.04}],
               "entities": [{"entity": "number", "start": 18, "end": 23, "text": "12345",
                             "value": "12345", "source": "number"}],
               "model_version": "nlu-x"}
    turn = UserTurn.from_payload(payload, "web")
    assert turn.ranking == (("order_status", 0.91), ("cancel_order", 0.04))
    assert turn.channel == "web" and turn.entities[0]["value"] == "12345"
    out = chat.manager.step(DialogueState(), turn, T0)
    assert out.request == CallAction("order_status", {"order_id": "12345"})


def test_an_unrelated_answer_to_a_clarification_is_handled_normally(chat: Chat) -> None:
    ranking = (("cancel_order", 0.45), ("refund_request", 0.42))
    chat.say("my order money", "cancel_order", 0.45, ranking=ranking)
    chat.say("hi", "greet")
    assert chat.responses == ["utter_greet"] and chat.state.stack == ()


def test_outcome_lists_the_slots_set_this_turn_even_when_the_flow_ended(chat: Chat) -> None:
    out = chat.say("where is my order 12345?", "order_status")
    assert out.slots_set == {"order_id": "12345"}
    out = chat.action(ActionResult("order_status", True, {"order_status": "shipped"}))
    assert out.slots_set == {"order_status": "shipped"}
    assert chat.state.slots == {}  # the flow ended and cleared it
    out = chat.say("hi", "greet")
    assert out.slots_set == {}


def test_a_free_text_answer_that_reads_like_another_intent(chat: Chat) -> None:
    chat.say("I want to make a complaint", "complaint")
    chat.say("my order arrived broken", "order_status", 0.98)  # allow_digressions: false
    assert chat.responses == ["utter_ask_email"]
    assert chat.state.slots["issue_description"] == "my order arrived broken"
    chat.say("forget it", "cancel")  # cancelling still works
    assert chat.responses == ["utter_flow_cancelled"]


def test_the_most_specific_variant_is_said(chat: Chat) -> None:
    for _ in range(2):
        chat.say("my credit card was stolen", "card_lost",
                 entities=({"entity": "card_type", "start": 3, "end": 9, "text": "credit",
                            "value": "credit", "source": "model"},))
        assert "block your credit card" in chat.text
        chat.say("no", "deny")


def test_chitchat_mapped_to_nothing_runs_the_chitchat_pattern(write_bot: WriteBot) -> None:
    folder = write_bot(bot_yml="name: tiny\nchitchat:\n  greet: null\n")
    chat = Chat(DialogueManager(load_bot(folder)))
    chat.say("hi", "greet")
    assert chat.responses == ["utter_chitchat"]
    chat.say("where is my order", "order_status")
    chat.say("hi", "greet")
    assert chat.responses == ["utter_chitchat", "utter_ask_order_id"]


def test_a_state_from_another_bot_version_keeps_working(write_bot: WriteBot) -> None:
    old = Chat(DialogueManager(load_bot(write_bot(**ACTION_FILES))))
    old.say("where is order", "order_status")
    assert old.state.requested_slot == "order_id"
    # the new version renamed the flow: the conversation starts afresh instead of failing
    renamed = ACTION_FILES["flows_yml"].replace("track_order:", "find_order:")
    new = Chat(DialogueManager(load_bot(write_bot(**{**ACTION_FILES, "flows_yml": renamed}))),
               old.state, old.now)
    new.say("where is order 12345", "order_status")
    assert isinstance(new.last.request if new.last else None, CallAction)
    assert new.state.active_flow == "find_order"
    # an action result for a step that the new version no longer has changes nothing wrong
    shorter = "flows:\n  find_order:\n    start:\n      intents: [order_status]\n" \
              "    steps:\n      - collect: order_id\n      - set_slots: {status: null}\n"
    newer = Chat(DialogueManager(load_bot(write_bot(**{**ACTION_FILES, "flows_yml": shorter}))),
                 new.state, new.now)
    out = newer.action(ActionResult("lookup_order", True, {"status": "shipped"}))
    assert out.state.pending is None and out.state.active_flow is None


STEP_FILES = {
    "slots_yml": "slots:\n  order_id:\n    type: pattern\n    pattern: '\\b(\\d{5,10})\\b'\n"
                 "  amount:\n    type: amount\n  big:\n    type: boolean\n",
    "responses_yml": "responses:\n  utter_ask_order_id:\n    - Number?\n"
                     "  utter_order_next:\n    - See {order_id}.\n"
                     "  utter_ask_amount:\n    - How much?\n"
                     "  utter_big:\n    - text: A big one ({amount}).\n"
                     "    - text: ':moneybag: {amount}'\n      channel: slack\n"
                     "  utter_small:\n    - A small one.\n  utter_back:\n    - Back in refunds.\n",
    "flows_yml": (
        "flows:\n"
        "  track_order:\n    start:\n      intents: [order_status]\n    steps:\n"
        "      - collect: order_id\n      - call: size_check\n      - say: utter_back\n"
        "      - link: goodbye_flow\n"
        "  size_check:\n    steps:\n      - collect: amount\n"
        "      - branch:\n          - if: amount.value > 100 and amount.currency == EUR\n"
        "            then: big\n"
        "      - say: utter_small\n      - end\n"
        "      - id: big\n        set_slots: {big: true}\n      - say: utter_big\n"
        "  goodbye_flow:\n    steps:\n      - say: utter_order_next\n"),
}


@pytest.mark.parametrize(("channel", "amount", "said"), [
    ("web", "150", "A big one (150 EUR)."), ("slack", "150", ":moneybag: 150 EUR"),
    ("web", "50", "A small one."),
])
def test_call_branch_set_slots_link_and_channel_variants(
        write_bot: WriteBot, channel: str, amount: str, said: str) -> None:
    manager = DialogueManager(load_bot(write_bot(**STEP_FILES)))
    state = DialogueState()
    out = manager.step(state, UserTurn("where is order 12345", "order_status",
                                       channel=channel), T0)
    assert [u.text for u in out.utterances] == ["How much?"]
    assert out.state.active_flow == "size_check"
    out = manager.step(out.state, UserTurn(amount, "oos", 0.1, True, channel=channel), T0 + 1)
    assert [u.text for u in out.utterances] == [said, "Back in refunds.", "See 12345."]
    assert ("big" in out.slots_set) == (said != "A small one.")
    assert out.state.stack == () and out.state.slots == {}


def test_knowledge_refusals_in_a_row_end_in_a_handoff(chat: Chat) -> None:
    def refused() -> Outcome:
        out = chat.manager.resume_knowledge(chat.state, "I could not find this.", (),
                                            chat.now, answered=False)
        chat.state = out.state
        return out

    chat.say("blah blah")
    chat.knowledge("An answer.")  # answered: nothing counted
    chat.say("qwerty")
    assert not refused().state.handoff
    chat.say("asdf")
    out = refused()
    assert [u.response for u in out.utterances] == ["knowledge_answer", "utter_handoff"]
    assert out.handoff and out.state.handoff
