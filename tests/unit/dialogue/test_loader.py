"""The bot folder: what loads, and every kind of problem reported with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.dialogue.domain import ActionStep, BranchStep, CollectStep
from agents.dialogue.loader import (
    BotFolderError,
    Problem,
    load_bot,
    parse_annotations,
    validate_bot,
)
from agents.nlu.data import SpanLabel
from tests.unit.dialogue.conftest import WriteBot

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"


def errors(folder: Path) -> list[Problem]:
    return [p for p in validate_bot(folder) if p.severity == "error"]


def only_error(folder: Path) -> Problem:
    found = errors(folder)
    assert len(found) == 1, found
    return found[0]


def test_the_base_bot_loads_with_examples_as_nlu_training_data(write_bot: WriteBot) -> None:
    bot = load_bot(write_bot())
    assert validate_bot(bot.folder) == []
    examples = bot.training_examples()
    annotated = next(e for e in examples if e.entities)
    assert annotated.text == "where is my order 12345"
    assert annotated.intent == "order_status"
    assert annotated.entities == (SpanLabel(18, 23, "order_id"),)
    assert {e.intent for e in examples} >= {"order_status", "greet"}
    flow = bot.flows["track_order"]
    assert isinstance(flow.steps[0], CollectStep) and flow.steps[0].ask == "utter_ask_order_id"
    assert flow.steps[0].source.file == "flows.yml" and flow.steps[0].source.line == 6


def test_the_demo_bot_is_valid_and_has_the_required_flows() -> None:
    assert [p for p in validate_bot(DEMO) if p.severity == "error"] == []
    bot = load_bot(DEMO)
    for flow, slots in {"transfer_money": {"amount", "recipient"}, "track_order": {"order_id"},
                        "block_card": set(), "open_ticket": {"issue_description", "email"}}.items():
        assert slots <= set(bot.flows[flow].collected_slots()), flow
    assert bot.slots["amount"].type == "amount"
    assert bot.has_knowledge
    nlu_intents = {line.split('"intent": "')[1].split('"')[0]
                   for line in (DEMO / "nlu.jsonl").read_text().splitlines() if line}
    assert nlu_intents <= set(bot.intents)


def test_content_hash_follows_the_files(write_bot: WriteBot) -> None:
    folder = write_bot()
    first = load_bot(folder).content_hash()
    assert load_bot(folder).content_hash() == first
    (folder / "responses.yml").write_text(
        (folder / "responses.yml").read_text() + "  utter_extra:\n    - Hi.\n")
    assert load_bot(folder).content_hash() != first


@pytest.mark.parametrize(("text", "plain", "spans"), [
    ("where is [12345](order_id)?", "where is 12345?", [(9, 14, "order_id")]),
    ("send [50 euros](amount) to [Anna](recipient)", "send 50 euros to Anna",
     [(5, 13, "amount"), (17, 21, "recipient")]),
    ("no annotation [here]", "no annotation [here]", []),
])
def test_inline_annotations(text: str, plain: str, spans: list[tuple[int, int, str]]) -> None:
    got, labels = parse_annotations(text)
    assert got == plain
    assert [(s.start, s.end, s.entity) for s in labels] == spans
    for s in labels:
        assert got[s.start:s.end] in text


def test_yaml_syntax_error_names_file_and_line(write_bot: WriteBot) -> None:
    folder = write_bot(flows_yml="flows:\n  track_order:\n    steps: [collect: x\n  other: 1\n")
    problem = next(p for p in errors(folder) if "YAML syntax" in p.message)
    assert problem.file == "flows.yml" and problem.line in (3, 4)


def test_unknown_keys_are_reported_where_they_are(write_bot: WriteBot) -> None:
    folder = write_bot(slots_yml="slots:\n  order_id:\n    type: pattern\n"
                                 "    pattern: '\\d{5}'\n    colour: blue\n")
    problem = only_error(folder)
    assert (problem.file, problem.line) == ("slots.yml", 5)
    assert "unknown key 'colour'" in problem.message


def test_every_problem_is_reported_not_only_the_first(write_bot: WriteBot) -> None:
    folder = write_bot(flows_yml=(
        "flows:\n"
        "  track_order:\n"
        "    start:\n      intents: [order_status]\n"
        "    steps:\n"
        "      - collect: order_number\n"          # line 6: unknown slot
        "      - say: utter_nowhere\n"             # line 7: unknown response
        "      - link: no_such_flow\n"             # line 8: unknown flow
        "      - action: charge_card\n"            # line 9: undeclared action
        "      - branch:\n"                        # line 10: unknown step id
        "          - if: order_id is set\n"
        "            then: missing_step\n"
    ))
    found = {(p.line, p.message.split(",")[0]) for p in errors(folder)}
    lines = {line for line, _ in found}
    assert {6, 7, 8, 9, 10} <= lines, found
    text = "\n".join(str(p) for p in errors(folder))
    assert "flows.yml:6: flow 'track_order' collects the unknown slot 'order_number'" in text
    assert "flows.yml:7:" in text and "'utter_nowhere'" in text
    assert "flows.yml:8:" in text and "unknown flow 'no_such_flow'" in text
    assert "flows.yml:9:" in text and "action 'charge_card'" in text
    assert "flows.yml:10:" in text and "'missing_step'" in text


def test_a_response_using_a_slot_no_flow_sets(write_bot: WriteBot) -> None:
    folder = write_bot(
        slots_yml="slots:\n  order_id:\n    type: pattern\n    pattern: '(\\d{5})'\n"
                  "  email:\n    type: text\n",
        responses_yml="responses:\n  utter_ask_order_id:\n    - Number?\n"
                      "  utter_order_next:\n    - Sent to {email}.\n"
                      "  utter_other:\n    - About {colour}.\n")
    found = [str(p) for p in errors(folder)]
    assert any(f.startswith("responses.yml:5:") and "'email', which no flow sets" in f
               for f in found), found
    assert any(f.startswith("responses.yml:7:") and "{colour}, which is not a slot" in f
               for f in found), found


def test_bad_regexes_are_errors_with_their_line(write_bot: WriteBot) -> None:
    folder = write_bot(slots_yml="slots:\n  order_id:\n    type: pattern\n"
                                 "    pattern: '(\\d{5,10}'\n")
    problem = only_error(folder)
    assert (problem.file, problem.line) == ("slots.yml", 4)
    assert "bad regular expression" in problem.message


def test_an_annotation_naming_an_entity_no_slot_uses(write_bot: WriteBot) -> None:
    folder = write_bot(intents_yml=(
        "intents:\n  order_status:\n    examples:\n"
        + "\n".join(f"      - where is order {n}" for n in range(11)) + "\n"
        "      - where is [12345](order_number)\n"))
    problem = only_error(folder)
    assert (problem.file, problem.line) == ("intents.yml", 15)
    assert "'order_number', which no slot uses" in problem.message


def test_a_malformed_annotation(write_bot: WriteBot) -> None:
    folder = write_bot(intents_yml=(
        "intents:\n  order_status:\n    examples:\n"
        + "\n".join(f"      - where is order {n}" for n in range(11)) + "\n"
        "      - where is [12345]( )\n"))
    problem = only_error(folder)
    assert problem.line == 15 and "entity name" in problem.message


def test_too_few_examples_is_a_warning_that_says_what_happens(write_bot: WriteBot) -> None:
    folder = write_bot(intents_yml=(
        "intents:\n  order_status:\n    examples:\n      - where is my order\n"
        "      - track order\n"))
    problems = validate_bot(folder)
    warnings = [p for p in problems if p.severity == "warning"]
    assert warnings and all(p.file == "intents.yml" for p in warnings)
    per_intent = next(p for p in warnings if "'order_status' has 2 example(s)" in p.message)
    assert per_intent.line == 2
    overall = next(p for p in warnings if "out-of-scope threshold of 0.0" in p.message)
    assert "add examples" in overall.message
    assert str(per_intent).startswith("intents.yml:2: warning: ")
    load_bot(folder)  # warnings do not stop loading


def test_duplicate_keys_and_unknown_types(write_bot: WriteBot) -> None:
    folder = write_bot(slots_yml="slots:\n  order_id:\n    type: pattern\n"
                                 "    pattern: '(\\d{5})'\n  order_id:\n    type: text\n"
                                 "  size:\n    type: colour\n")
    found = [str(p) for p in errors(folder)]
    assert any(f.startswith("slots.yml:5:") and "duplicate key 'order_id'" in f for f in found)
    assert any(f.startswith("slots.yml:8:") and "unknown type 'colour'" in f for f in found)


def test_a_missing_file_and_a_bad_condition(write_bot: WriteBot) -> None:
    folder = write_bot(responses_yml=None, flows_yml=(
        "flows:\n  track_order:\n    steps:\n      - branch:\n          - if: order_id >\n"
        "            then: end\n"))
    found = [str(p) for p in errors(folder)]
    assert any(f.startswith("responses.yml:0: missing") for f in found), found
    assert any(f.startswith("flows.yml:5:") and "condition" in f for f in found), found


def test_bot_folder_error_lists_every_problem(write_bot: WriteBot) -> None:
    folder = write_bot(flows_yml="flows:\n  track_order:\n    steps:\n      - collect: nope\n"
                                 "      - say: nothing\n")
    with pytest.raises(BotFolderError) as caught:
        load_bot(folder)
    text = str(caught.value)
    assert "flows.yml:4: flow 'track_order' collects the unknown slot 'nope'" in text
    assert "flows.yml:5:" in text
    assert len([p for p in caught.value.problems if p.severity == "error"]) >= 3


def test_actions_are_declared_with_inputs_and_outputs(write_bot: WriteBot) -> None:
    actions = "actions:\n  lookup_order:\n    inputs: [order_id]\n    outputs: [status]\n"
    slots = ("slots:\n  order_id:\n    type: pattern\n    pattern: '(\\d{5})'\n"
             "  status:\n    type: text\n")
    folder = write_bot(
        actions_yml=actions, slots_yml=slots,
        flows_yml="flows:\n  track_order:\n    start:\n      intents: [order_status]\n"
                  "    steps:\n      - collect: order_id\n      - action: lookup_order\n"
                  "        outputs: {status: status, eta: status}\n"
                  "      - say: utter_order_next\n")
    problem = only_error(folder)
    assert problem.line == 7 and "declares no output 'eta'" in problem.message
    folder = write_bot(actions_yml=actions, slots_yml=slots,
                       flows_yml="flows:\n  track_order:\n    start:\n      intents: "
                                 "[order_status]\n    steps:\n      - collect: order_id\n"
                                 "      - action: lookup_order\n        outputs: [status]\n"
                                 "      - branch:\n          - if: status == shipped\n"
                                 "            then: done\n      - id: done\n"
                                 "        say: utter_order_next\n")
    bot = load_bot(folder)
    steps = bot.flows["track_order"].steps
    assert isinstance(steps[1], ActionStep) and steps[1].outputs == {"status": "status"}
    assert isinstance(steps[2], BranchStep)


def test_a_misnamed_file_is_a_warning(write_bot: WriteBot) -> None:
    folder = write_bot()
    (folder / "flow.yml").write_text("flows: {}\n")
    problems = validate_bot(folder)
    assert [(p.file, p.severity) for p in problems] == [("flow.yml", "warning")]
    assert "unknown file 'flow.yml'" in problems[0].message
