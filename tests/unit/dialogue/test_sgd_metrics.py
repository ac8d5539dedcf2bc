"""The SGD (DSTC8) metrics on hand-made frames, and the replay of SGD dialogues."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agents.dialogue.sgd import (
    FrameState,
    IntentSchema,
    ServiceSchema,
    SgdDataError,
    SgdMapping,
    SlotSchema,
    SystemContext,
    TrackedState,
    aggregate,
    evaluate_dialogues,
    format_value,
    fuzzy_match,
    hypothesis_frame,
    load_mapping,
    score_frame,
    user_turns,
)

BANK = ServiceSchema("Bank", (
    SlotSchema("account_type", True, ("checking", "savings")),
    SlotSchema("amount", False),
    SlotSchema("recipient", False),
), (IntentSchema("Transfer", ("account_type", "amount", "recipient")),
    IntentSchema("Balance", ("account_type",))))


def frame(intent: str = "Transfer", requested: tuple[str, ...] = (),
          **values: tuple[str, ...]) -> FrameState:
    return FrameState(intent, requested, values)


@pytest.mark.parametrize(("ref", "hyp", "score"), [
    ("$1,500", "$1,500", 1.0), ("$1,500", "1500", 0.89), ("Grace", "grace", 1.0),
    ("New York", "york new", 1.0), ("Philip", "Anna", 0.0), ("Mom", "", 0.0),
    ("café crème", "cafe creme", 0.89), ("Jasbir", "jasbir singh", 0.67),
])
def test_fuzzy_match_is_token_sort_ratio(ref: str, hyp: str, score: float) -> None:
    assert fuzzy_match(ref, hyp) == score


def test_a_perfect_frame_scores_one_everywhere() -> None:
    ref = frame(account_type=("savings",), amount=("$20", "20 dollars"))
    hyp = frame(account_type=("savings",), amount=("20 dollars",))
    s = score_frame(ref, hyp, BANK)
    assert (s.active_intent, s.requested_slots_f1, s.average_goal, s.joint_goal) == (1, 1, 1, 1)


def test_one_wrong_categorical_slot_zeroes_the_joint_goal() -> None:
    ref = frame(account_type=("savings",), amount=("$20",))
    hyp = frame(account_type=("checking",), amount=("$20",))
    s = score_frame(ref, hyp, BANK)
    assert s.joint_goal == 0.0 and s.average_goal == 0.5


def test_a_slot_predicted_but_not_in_the_reference_counts_only_in_the_joint_goal() -> None:
    ref = frame(account_type=("savings",))
    hyp = frame(account_type=("savings",), recipient=("Anna",))
    s = score_frame(ref, hyp, BANK)
    assert s.average_goal == 1.0 and s.joint_goal == 0.0


def test_non_categorical_slots_score_their_fuzzy_match() -> None:
    ref = frame(amount=("$1,500", "1500 dollars"))
    s = score_frame(ref, frame(amount=("1500",)), BANK)
    assert fuzzy_match("1500 dollars", "1500") == 0.5
    assert s.average_goal == s.joint_goal == fuzzy_match("$1,500", "1500") == 0.89


def test_a_frame_without_reference_values_has_no_average_goal() -> None:
    s = score_frame(frame("NONE"), frame("Transfer"), BANK)
    assert s.average_goal is None and s.joint_goal == 1.0 and s.active_intent == 0.0


@pytest.mark.parametrize(("ref", "hyp", "f1"), [
    ((), (), 1.0), (("amount",), (), 0.0), ((), ("amount",), 0.0),
    (("amount", "recipient"), ("amount",), 2 / 3),
])
def test_requested_slots_f1(ref: tuple[str, ...], hyp: tuple[str, ...], f1: float) -> None:
    assert score_frame(frame(requested=ref), frame(requested=hyp), BANK).requested_slots_f1 \
        == pytest.approx(f1)


def test_aggregate_averages_frames_and_leaves_out_frames_without_goals() -> None:
    frames = [score_frame(frame("NONE"), frame("NONE"), BANK),
              score_frame(frame(account_type=("savings",)), frame(account_type=("savings",)),
                          BANK),
              score_frame(frame(account_type=("savings",), amount=("$5",)),
                          frame("Balance", account_type=("savings",)), BANK)]
    metrics = aggregate(frames)
    assert metrics.n_frames == 3
    assert metrics.joint_goal_accuracy == pytest.approx(2 / 3)
    assert metrics.average_goal_accuracy == pytest.approx((1 + 0.5) / 2)
    assert metrics.active_intent_accuracy == pytest.approx(2 / 3)
    with pytest.raises(SgdDataError):
        aggregate([])


@pytest.mark.parametrize(("value", "shown"), [
    ({"value": 1500, "currency": "USD"}, "$1,500"), ({"value": 20.5, "currency": "USD"}, "$20.50"),
    ({"value": 30.0, "currency": "EUR"}, "30 EUR"), (True, "True"), ("Anna", "Anna"),
    (None, None), (12, "12"),
])
def test_bot_values_are_written_as_sgd_writes_them(value: Any, shown: str | None) -> None:
    assert format_value(value) == shown


def _turn(speaker: str, text: str, acts: list[dict[str, Any]] | None = None,
          state: Mapping[str, Any] | None = None, service: str = "Bank") -> dict[str, Any]:
    f: dict[str, Any] = {"service": service, "actions": acts or [], "slots": []}
    if state is not None:
        f["state"] = state
    return {"speaker": speaker, "utterance": text, "frames": [f]}


DIALOGUE = {"dialogue_id": "1_001", "services": ["Bank"], "turns": [
    _turn("USER", "I'd like to move money", state={
        "active_intent": "Transfer", "requested_slots": [], "slot_values": {}}),
    _turn("SYSTEM", "From which account?", [{"act": "REQUEST", "slot": "account_type",
                                             "values": []}]),
    _turn("USER", "savings, 20 bucks to Li", state={
        "active_intent": "Transfer", "requested_slots": [],
        "slot_values": {"account_type": ["savings"], "amount": ["$20", "20 bucks"],
                        "recipient": ["Li"]}}),
    _turn("SYSTEM", "Anything else? Check a balance?",
          [{"act": "OFFER_INTENT", "slot": "intent", "values": ["Balance"]}]),
    _turn("USER", "yes, how long will the transfer take?", state={
        "active_intent": "Balance", "requested_slots": ["amount"],
        "slot_values": {"account_type": ["savings"]}}),
]}


def test_user_turns_carry_what_the_system_had_just_done() -> None:
    records = list(user_turns(DIALOGUE, "Bank"))
    assert [r.turn_index for r in records] == [0, 2, 4]
    assert [r.context for r in records] == [
        SystemContext(), SystemContext("account_type"), SystemContext(None, "Balance")]
    assert records[1].reference.slot_values["amount"] == ("$20", "20 bucks")


class RecordingTracker:
    def __init__(self, states: list[TrackedState]) -> None:
        self.states = states
        self.seen: list[Any] = []

    def reset(self) -> None:
        self.seen.append("reset")

    def user_turn(self, text: str, context: SystemContext) -> TrackedState:
        self.seen.append((text, context))
        return self.states[len(self.seen) - 2]


MAPPING = SgdMapping("Bank", {"Transfer": ("transfer_money",), "Balance": ("check_balance",)},
                     {"recipient": "recipient_name"}, {})


def test_bot_values_become_the_schema_s_values() -> None:
    mapping = SgdMapping("Bank", {}, {}, {}, (), {"account_type": {"current": "checking"}})
    tracked = TrackedState(None, {"account_type": "Current", "amount": {"value": 5},
                                  "recipient": "Li"}, surface={"amount": "five bucks"})
    frame = hypothesis_frame(tracked, "", mapping, BANK, "Transfer")
    assert dict(frame.slot_values) == {"account_type": ("checking",),
                                       "amount": ("five bucks",), "recipient": ("Li",)}
    tracked = TrackedState(None, {"account_type": "Saving"})
    assert hypothesis_frame(tracked, "", mapping, BANK, "NONE").slot_values == {
        "account_type": ("savings",)}


def test_evaluate_replays_a_dialogue_and_keeps_the_last_intent() -> None:
    tracker = RecordingTracker([
        TrackedState("transfer_money", {}),
        TrackedState(None, {"account_type": "savings", "recipient_name": "Li",
                            "amount": {"value": 20, "currency": "USD"}},
                     flows_started=()),
        TrackedState("pattern_cannot_handle", {"account_type": "savings"}),
    ])
    metrics, predictions = evaluate_dialogues([DIALOGUE], BANK, MAPPING, tracker)
    assert tracker.seen[0] == "reset" and tracker.seen[2][1] == SystemContext("account_type")
    assert [p.hypothesis.active_intent for p in predictions] == ["Transfer"] * 3
    assert predictions[1].as_json("Bank") == {
        "dialogue_id": "1_001", "turn_index": 2, "service": "Bank", "active_intent": "Transfer",
        "requested_slots": [], "slot_values": {"account_type": "savings", "amount": "$20",
                                               "recipient": "Li"}}
    assert metrics.n_frames == 3
    assert metrics.joint_goal_accuracy == 1.0
    assert metrics.active_intent_accuracy == pytest.approx(2 / 3)
    assert metrics.requested_slots_f1 == pytest.approx(2 / 3)


def test_the_mapping_file_is_checked_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "sgd.yml"
    path.write_text("intents: {Transfer: transfer_money, Pay: pay}\nslots: {amount: amt}\n"
                    "requested_slots: {amount: ['how (much|many']}\n")
    with pytest.raises(SgdDataError) as info:
        load_mapping(path, BANK)
    assert "'Pay' is not an intent of Bank" in str(info.value)
    assert "bad regex" in str(info.value)
    path.write_text("intents: {Transfer: [transfer_money, quick_transfer]}\n"
                    "requested_slots: {amount: ['how much']}\n"
                    "values: {account_type: {current: checking}}\n")
    mapping = load_mapping(path, BANK)
    assert mapping.values == {"account_type": {"current": "checking"}}
    assert mapping.intent_of_flow("quick_transfer") == "Transfer"
    assert mapping.requested_in("How much was it?") == ("amount",)
    assert mapping.bot_slot("recipient") == "recipient"
