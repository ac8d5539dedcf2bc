"""``parley test`` and ``parley dialogue evaluate`` end to end in process, with a stand-in
NLU (keyword rules) so that no model is trained: the dialogue manager is the real one."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agents.dialogue import sgd_cli, testing_cli
from agents.dialogue.inline import InlineBot
from agents.dialogue.loader import load_bot
from agents.dialogue.sgd import (
    IntentSchema,
    ServiceSchema,
    SgdMapping,
    SlotSchema,
    SystemContext,
    TrackedState,
    hypothesis_frame,
)
from agents.dialogue.sgd_cli import BotTracker
from agents.nlu.results import EntityMatch, Understanding

BOT = {
    "bot.yml": "name: tiny\ndefault_currency: USD\naffirm_intents: [affirm]\n"
               "deny_intents: [deny]\ncancel_intents: [cancel]\n"
               "chitchat: {affirm: utter_ok, thanks: utter_ok}\n",
    "intents.yml": "intents:\n"
                   "  transfer: {examples: [send money, transfer money, pay someone]}\n"
                   "  balance: {examples: [my balance, how much do I have, balance please]}\n"
                   "  affirm: {examples: ['yes', sure, ok]}\n"
                   "  deny: {examples: ['no', nope, no thanks]}\n"
                   "  thanks: {examples: [thanks, thank you, cheers]}\n"
                   "  cancel: {examples: [cancel, stop, forget it]}\n",
    "slots.yml": "slots:\n"
                 "  amount: {type: amount, entities: [amount]}\n"
                 "  recipient: {type: text, extract: ['\\bto\\s+([A-Z][a-z]+)']}\n"
                 "  account: {type: categorical, values: [checking, savings]}\n"
                 "  confirm: {type: boolean}\n",
    "flows.yml": "flows:\n"
                 "  transfer_money:\n"
                 "    start: {intents: [transfer]}\n"
                 "    persisted_slots: [amount, recipient]\n"
                 "    steps:\n"
                 "      - collect: amount\n"
                 "      - collect: recipient\n"
                 "      - collect: confirm\n"
                 "        ask_before_filling: true\n"
                 "      - say: utter_done\n"
                 "  check_balance:\n"
                 "    start: {intents: [balance]}\n"
                 "    steps:\n"
                 "      - collect: account\n"
                 "      - say: utter_balance\n",
    "responses.yml": "responses:\n"
                     "  utter_ask_amount: ['How much?']\n"
                     "  utter_ask_recipient: ['Who to?']\n"
                     "  utter_ask_confirm: ['Send {amount} to {recipient}?']\n"
                     "  utter_ask_account: ['Which account?']\n"
                     "  utter_done: ['Nothing was sent: this chat cannot send money yet.']\n"
                     "  utter_balance: ['Your {account} balance is in the app.']\n"
                     "  utter_ok: [Okay.]\n",
}

RULES = [("send", "transfer"), ("transfer", "transfer"), ("pay", "transfer"),
         ("balance", "balance"), ("yes", "affirm"), ("sure", "affirm"), ("no", "deny"),
         ("thank", "thanks"), ("cancel", "cancel")]


class KeywordNlu:
    """The first rule whose keyword is in the message; amounts like $40 as entities."""

    def understand(self, text: str, reference_time: datetime | None = None) -> Understanding:
        low = text.lower()
        intent = next((i for k, i in RULES if k in low), "")
        entities = []
        if "$" in text:
            start = text.index("$")
            end = start + 1
            while end < len(text) and (text[end].isdigit() or text[end] == ","):
                end += 1
            number = text[start + 1:end].replace(",", "")
            entities.append(EntityMatch("amount", start, end, text[start:end],
                                        f"{number}.00 USD", "amount"))
        return Understanding(intent or "oos", 0.95 if intent else 0.2, not intent,
                             ((intent or "oos", 0.95 if intent else 0.2),), tuple(entities), "t")


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, text in BOT.items():
        (folder / name).write_text(text)
    (folder / "tests").mkdir()
    (folder / "tests" / "cases.yml").write_text("""\
test_cases:
  - test_case: transfer
    steps:
      - user: send $40 to Anna
      - bot: Send 40 USD to Anna?
      - slot_was_set: {amount: {value: 40, currency: USD}, recipient: Anna}
      - requested_slot: confirm
      - active_flow: transfer_money
      - user: "yes"
      - utter: utter_done
      - active_flow: null
""")
    return folder


@pytest.fixture
def inline(bot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> InlineBot:
    bot = InlineBot(load_bot(bot_dir), KeywordNlu())
    monkeypatch.setattr(testing_cli, "load_inline_bot", lambda *_a, **_k: bot)
    monkeypatch.setattr(sgd_cli, "load_inline_bot", lambda *_a, **_k: bot)
    return bot


def test_parley_test_passes_a_bot_that_does_what_its_cases_say(bot_dir: Path,
                                                             inline: InlineBot) -> None:
    result = CliRunner().invoke(testing_cli.test, [str(bot_dir), "--json",
                                                   "--cache", str(bot_dir / "m")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"passed": 1, "failed": 0, "failures": []}


def test_parley_test_exits_1_and_names_the_failing_step(bot_dir: Path, inline: InlineBot,
                                                        tmp_path: Path) -> None:
    cases = tmp_path / "wrong.yml"
    cases.write_text("test_cases:\n  - test_case: wrong\n    steps:\n"
                     "      - user: send $40\n      - utter: utter_ask_confirm\n")
    result = CliRunner().invoke(testing_cli.test, [str(bot_dir), "--cases", str(cases)])
    assert result.exit_code == 1
    assert f"step 2 ({cases}:5)" in result.output
    assert 'actual:   ["utter_ask_recipient"]' in result.output
    assert "0 passed, 1 failed" in result.output


def test_parley_test_refuses_a_bad_case_file_with_its_line(bot_dir: Path, inline: InlineBot,
                                                           tmp_path: Path) -> None:
    cases = tmp_path / "bad.yml"
    cases.write_text("test_cases:\n  - test_case: bad\n    steps:\n      - usr: hi\n")
    result = CliRunner().invoke(testing_cli.test, [str(bot_dir), "--cases", str(cases)])
    assert result.exit_code == 2
    assert f"{cases}:4: unknown step 'usr'" in result.output


BANK_SCHEMA = ServiceSchema("Bank", (SlotSchema("transfer_amount", False),),
                            (IntentSchema("Transfer"), IntentSchema("Balance")))
MAPPING = SgdMapping("Bank", {"Transfer": ("transfer_money",), "Balance": ("check_balance",)},
                     {"recipient_name": "recipient", "transfer_amount": "amount",
                      "account_type": "account"}, {}, ("deny", "thanks"))


def test_the_tracker_feeds_what_the_dataset_system_did(inline: InlineBot) -> None:
    tracker = BotTracker(inline, MAPPING)
    tracker.reset()
    first = tracker.user_turn("I want to send money", SystemContext())
    assert first.active_flow == "transfer_money" and tracker.state.requested_slot == "amount"
    # the dataset's system asked for the recipient, not the amount: "Li" answers that
    second = tracker.user_turn("Li", SystemContext("recipient_name"))
    assert second.slots.get("recipient") == "Li" and "amount" not in second.slots
    third = tracker.user_turn("it's $1,500", SystemContext("transfer_amount"))
    assert third.slots["amount"] == {"value": 1500, "currency": "USD"}
    assert third.surface == {"amount": "$1,500"}
    tracker.reset()
    offered = tracker.user_turn("sure", SystemContext(None, "Balance"))
    assert offered.active_flow == "check_balance"


def test_a_confirmation_the_user_moves_on_from_counts_as_agreed(inline: InlineBot) -> None:
    tracker = BotTracker(inline, MAPPING)
    tracker.reset()
    asked = tracker.user_turn("send $20 to Li", SystemContext())
    assert tracker.state.requested_slot == "confirm" and asked.active_flow == "transfer_money"
    done = tracker.user_turn("Great. How long will it take?", SystemContext(confirming=True))
    assert done.active_flow is None and done.slots["recipient"] == "Li"
    tracker.reset()
    tracker.user_turn("send $20 to Li", SystemContext())
    refused = tracker.user_turn("no", SystemContext(confirming=True))
    assert refused.answer is False and refused.slots.get("confirm") is not True


def test_declining_an_offered_intent_ends_the_active_one() -> None:
    tracked = TrackedState(None, {}, intent="oos", answer=False)
    frame = hypothesis_frame(tracked, "No. I'd rather buy tickets.", MAPPING, BANK_SCHEMA,
                             "Balance", SystemContext(None, "Transfer"))
    assert frame.active_intent == "NONE"
    kept = hypothesis_frame(TrackedState(None, {}, intent="oos"), "hmm", MAPPING, BANK_SCHEMA,
                            "Balance", SystemContext(None, "Transfer"))
    assert kept.active_intent == "Balance"


def _sgd_files(tmp_path: Path) -> tuple[Path, Path]:
    def turn(speaker: str, text: str, acts: list[dict[str, Any]] | None = None,
             state: dict[str, Any] | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"service": "Bank", "actions": acts or [], "slots": []}
        if state is not None:
            frame["state"] = {"requested_slots": [], **state}
        return {"speaker": speaker, "utterance": text, "frames": [frame]}

    dialogues = [{"dialogue_id": "d1", "services": ["Bank"], "turns": [
        turn("USER", "I want to send money", state={"active_intent": "Transfer",
                                                    "slot_values": {}}),
        turn("SYSTEM", "How much?", [{"act": "REQUEST", "slot": "transfer_amount",
                                      "values": []}]),
        turn("USER", "$20 to Li", state={"active_intent": "Transfer", "slot_values": {
            "transfer_amount": ["$20"], "recipient_name": ["Li"]}}),
        turn("SYSTEM", "Confirm?", [{"act": "CONFIRM", "slot": "", "values": []}]),
        turn("USER", "yes", state={"active_intent": "Transfer", "slot_values": {
            "transfer_amount": ["$20"], "recipient_name": ["Li"]}}),
        turn("SYSTEM", "Anything else?", [{"act": "REQ_MORE", "slot": "", "values": []}]),
        turn("USER", "no thanks", state={"active_intent": "NONE", "slot_values": {
            "transfer_amount": ["$20"], "recipient_name": ["Li"]}}),
    ]}]
    schema = [{"service_name": "Bank", "description": "", "slots": [
        {"name": "account_type", "is_categorical": True, "possible_values": ["checking"]},
        {"name": "transfer_amount", "is_categorical": False, "possible_values": []},
        {"name": "recipient_name", "is_categorical": False, "possible_values": []}],
        "intents": [{"name": "Transfer", "required_slots": []},
                    {"name": "Balance", "required_slots": []}]}]
    (tmp_path / "dev_dialogues.json").write_text(json.dumps(dialogues))
    (tmp_path / "dev_schema.json").write_text(json.dumps(schema))
    return tmp_path / "dev_dialogues.json", tmp_path / "dev_schema.json"


def test_parley_dialogue_evaluate_scores_and_writes_predictions(
        bot_dir: Path, inline: InlineBot, tmp_path: Path) -> None:
    dialogues, _ = _sgd_files(tmp_path)
    (bot_dir / "sgd.yml").write_text(
        "service: Bank\nintents: {Transfer: transfer_money, Balance: check_balance}\n"
        "slots: {transfer_amount: amount, recipient_name: recipient, account_type: account}\n"
        "ends_intents: [deny, thanks]\n")
    out = tmp_path / "predictions.jsonl"
    result = CliRunner().invoke(sgd_cli.dialogue, [
        "evaluate", "--bot", str(bot_dir), "--dialogues", str(dialogues), "--service", "Bank",
        "--predictions", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "joint_goal_accuracy": 1.0, "average_goal_accuracy": 1.0,
        "active_intent_accuracy": 1.0, "requested_slots_f1": 1.0, "n_frames": 4}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["turn_index"] for line in lines] == [0, 2, 4, 6]
    assert lines[1] == {"dialogue_id": "d1", "turn_index": 2, "service": "Bank",
                        "active_intent": "Transfer", "requested_slots": [],
                        "slot_values": {"transfer_amount": "$20", "recipient_name": "Li"}}
    assert lines[3]["active_intent"] == "NONE"


def test_parley_dialogue_evaluate_names_an_unknown_service(
        bot_dir: Path, inline: InlineBot, tmp_path: Path) -> None:
    dialogues, _ = _sgd_files(tmp_path)
    result = CliRunner().invoke(sgd_cli.dialogue, [
        "evaluate", "--bot", str(bot_dir), "--dialogues", str(dialogues), "--service", "Pay"])
    assert result.exit_code == 1
    assert "the schema has no service 'Pay' (it has Bank)" in result.output
