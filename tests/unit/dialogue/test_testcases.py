"""Conversation test cases: the file format, its errors, and the runner's verdicts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import websockets

from agents.dialogue.testcases import (
    NO_STATE,
    CaseFileError,
    Conversation,
    Observation,
    Snapshot,
    TestCase,
    WebSocketConversation,
    _observations,
    dev_token,
    load_cases,
    parse_cases,
    run_cases,
    value_matches,
)

CASES = """\
test_cases:
  - test_case: track an order
    steps:
      - user: where is my order 12345
      - utter: utter_order_status
      - bot: "Anything else?"
      - slot_was_set: {order_id: "12345"}
      - active_flow: null
  - test_case: transfer
    steps:
      - user: send 50 euros
      - slot_was_set:
          amount: {currency: EUR, value: 50}
      - slot_was_set: [amount]
      - slot_was_not_set: [recipient]
      - requested_slot: recipient
      - active_flow: transfer_money
"""


class ScriptedConversation:
    """A conversation whose replies and states are given per user text."""

    def __init__(self, script: Mapping[str, tuple[list[Observation], Snapshot | None]]) -> None:
        self.script = script
        self.state: Snapshot | None = None
        self.sent: list[str] = []
        self.closed = False

    async def send(self, text: str) -> list[Observation]:
        self.sent.append(text)
        replies, self.state = self.script[text]
        return replies

    def snapshot(self) -> Snapshot | None:
        return self.state

    async def close(self) -> None:
        self.closed = True


def run(cases: Sequence[TestCase], conversation: ScriptedConversation) -> dict[str, Any]:
    async def factory(case: TestCase) -> Conversation:
        return conversation

    return asyncio.run(run_cases(cases, factory)).as_json()


GOOD = {
    "where is my order 12345": (
        [Observation("Order 12345 is on its way.", "utter_order_status"),
         Observation("Anything else?", "utter_anything_else")],
        Snapshot({"order_id": "12345"}, None, None)),
    "send 50 euros": (
        [Observation("Who to?", "utter_ask_recipient")],
        Snapshot({"amount": {"value": 50.0, "currency": "EUR"}, "recipient": None},
                 "transfer_money", "recipient")),
}


def test_cases_parse_with_their_lines() -> None:
    cases = parse_cases(CASES, "bot/tests/flows.yml")
    assert [c.name for c in cases] == ["track an order", "transfer"]
    first = cases[0].steps
    assert [s.kind for s in first] == ["user", "utter", "bot", "slot_was_set", "active_flow"]
    assert first[0].where == "bot/tests/flows.yml:4"
    assert first[4].value is None
    assert cases[1].steps[1].value == {"amount": {"currency": "EUR", "value": 50}}


def test_a_conversation_that_does_what_the_cases_say_passes() -> None:
    result = run(parse_cases(CASES), ScriptedConversation(GOOD))
    assert result == {"passed": 2, "failed": 0, "failures": []}


def test_a_wrong_reply_fails_at_its_step_with_expected_and_actual() -> None:
    script = dict(GOOD)
    script["where is my order 12345"] = (
        [Observation("What's the order number?", "utter_ask_order_id")],
        Snapshot({}, "track_order", "order_id"))
    result = run(parse_cases(CASES, "flows.yml"), ScriptedConversation(script))
    assert result["passed"] == 1 and result["failed"] == 1
    failure = result["failures"][0]
    assert failure["test_case"] == "track an order"
    assert failure["step"] == 2 and failure["where"] == "flows.yml:5"
    assert failure["expected"] == 'utter: "utter_order_status"'
    assert failure["actual"] == '["utter_ask_order_id"]'


def test_replies_are_matched_in_order() -> None:
    text = """\
test_cases:
  - test_case: order
    steps:
      - user: where is my order 12345
      - utter: utter_anything_else
"""
    result = run(parse_cases(text), ScriptedConversation(GOOD))
    assert result["failed"] == 1
    assert result["failures"][0]["actual"] == '["utter_order_status", "utter_anything_else"]'


@pytest.mark.parametrize(("step", "actual"), [
    ("slot_was_set: {amount: {currency: USD}}",
     'slots: {"amount": {"value": 50.0, "currency": "EUR"}}'),
    ("slot_was_set: [recipient]", 'slots: {"recipient": null}'),
    ("slot_was_not_set: [amount]", 'slots: {"amount": {"value": 50.0, "currency": "EUR"}}'),
    ("requested_slot: null", 'requested_slot: "recipient"'),
    ("active_flow: track_order", 'active_flow: "transfer_money"'),
])
def test_state_assertions_fail_with_the_actual_state(step: str, actual: str) -> None:
    text = ("test_cases:\n  - test_case: t\n    steps:\n      - user: send 50 euros\n"
            f"      - {step}\n")
    result = run(parse_cases(text), ScriptedConversation(GOOD))
    assert result["failed"] == 1
    assert result["failures"][0]["actual"] == actual


def test_a_conversation_without_state_says_so() -> None:
    conversation = ScriptedConversation({"send 50 euros": ([Observation("Who?")], None)})
    result = run(parse_cases(CASES)[1:], conversation)
    assert result["failures"][0]["actual"] == NO_STATE
    assert "--role bot_tester" in NO_STATE  # it says how to get the state


@pytest.mark.parametrize(("expected", "actual", "matches"), [
    (50, 50.0, True), (50, "50", True), (50, "fifty", False), (50.5, 50, False),
    ({"currency": "EUR"}, {"value": 5, "currency": "EUR"}, True),
    ({"currency": "EUR"}, {"value": 5}, False), ({"value": 5}, 5, False),
    (50, {"value": 50.0, "currency": "EUR"}, True), (50, {"currency": "EUR"}, False),
    ("Anna", "Anna", True), ("Anna", "anna", False), (True, True, True), (True, 1, False),
    (None, None, True), ([1, 2], [1, 2.0], True), ([1, 2], [1], False),
])
def test_slot_values_match_as_documented(expected: Any, actual: Any, matches: bool) -> None:
    assert value_matches(expected, actual) is matches


@pytest.mark.parametrize(("text", "message"), [
    ("cases: []\n", "1: expected a mapping with `test_cases:`"),
    ("test_cases:\n  - test_case: a\n    steps:\n      - user: hi\n      - say: x\n",
     "5: unknown step 'say'"),
    ("test_cases:\n  - test_case: a\n    steps:\n      - user: hi\n      - bot: ''\n",
     "5: `bot` needs a non-empty text"),
    ("test_cases:\n  - test_case: a\n    steps:\n      - user: no\n",
     "4: `user` needs a text: YAML reads 'no' as False; write it in quotes"),
    ("test_cases:\n  - test_case: a\n    steps:\n      - user: hi\n      - slot_was_set: 3\n",
     "5: `slot_was_set` needs"),
    ("test_cases:\n  - test_case: a\n    steps:\n      - user: hi\n        bot: x\n",
     "4: a step is one `KIND: VALUE` pair"),
    ("test_cases:\n  - test_case: a\n    steps: []\n", "3: test case 'a': `steps` must be"),
    ("test_cases:\n  - test_case: a\n    steps:\n      - bot: hi\n", "2: test case 'a' has no"),
    ("test_cases:\n  - test_case: a\n    steps: [user: hi\n", "not valid YAML"),
])
def test_bad_files_are_refused_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(CaseFileError) as info:
        parse_cases(text, "t.yml")
    assert any(p.startswith("t.yml:") and message in p for p in info.value.problems), \
        info.value.problems


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(CASES)
    (tmp_path / "b.yml").write_text(CASES.replace("- user: send 50 euros", "- usr: x"))
    (tmp_path / "c.yml").write_text(CASES)
    with pytest.raises(CaseFileError) as info:
        load_cases([tmp_path / "a.yml", tmp_path / "b.yml", tmp_path / "c.yml"])
    problems = info.value.problems
    assert any(p.startswith(f"{tmp_path / 'b.yml'}:11: unknown step 'usr'") for p in problems)
    assert any("already defined at" in p and "a.yml:2" in p for p in problems)


def test_a_websocket_conversation_reads_reply_frames() -> None:
    """A stand-in gateway on port 0 that speaks the /ws protocol, with the extra fields."""

    async def gateway(ws: Any) -> None:
        assert "debug=1" in ws.request.path
        await ws.send(json.dumps({"type": "welcome", "conversation_id": "c"}))
        async for raw in ws:
            msg = json.loads(raw)
            await ws.send(json.dumps({"type": "ack", "client_msg_id": msg["client_msg_id"]}))
            await ws.send(json.dumps({"type": "reply", "text": "Who to?", "seq": 1,
                                      "in_reply_to": "someone-else"}))
            await ws.send(json.dumps({
                "type": "reply", "text": "Who should get it?", "seq": 2,
                "in_reply_to": msg["client_msg_id"], "response": "utter_ask_recipient",
                "turn_end": True, "state": {"slots": {"amount": {"value": 50, "currency": "EUR"}},
                                            "active_flow": "transfer_money",
                                            "requested_slot": "recipient"}}))

    async def scenario() -> dict[str, Any]:
        async with websockets.serve(gateway, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/ws"

            async def factory(case: TestCase) -> Conversation:
                return await WebSocketConversation.open(url, timeout_s=5)

            return (await run_cases(parse_cases(CASES)[1:], factory)).as_json()

    assert asyncio.run(scenario()) == {"passed": 1, "failed": 0, "failures": []}


def test_a_websocket_url_without_path_gets_ws_and_a_wrong_one_is_explained() -> None:
    async def page(ws: Any) -> None:  # never reached: the handshake is refused below
        await ws.close()

    def refuse(connection: Any, request: Any) -> Any:
        return connection.respond(200, "a chat page, not a socket\n")

    async def scenario() -> tuple[str, str]:
        async with websockets.serve(page, "127.0.0.1", 0, process_request=refuse) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(ConnectionError) as info:
                await WebSocketConversation.open(f"ws://127.0.0.1:{port}", timeout_s=5)
            return str(info.value), f"ws://127.0.0.1:{port}"

    message, url = asyncio.run(scenario())
    assert message == f"cannot open a conversation at {url} (HTTP 200); expected " \
        "ws://HOST:PORT/ws"


def test_a_turn_without_an_end_mark_ends_after_a_quiet_moment() -> None:
    async def gateway(ws: Any) -> None:
        assert ws.request.path.startswith("/ws?")
        await ws.send(json.dumps({"type": "welcome"}))
        async for raw in ws:
            msg = json.loads(raw)
            for text in ("one", "two"):
                await ws.send(json.dumps({"type": "reply", "text": text,
                                          "in_reply_to": msg["client_msg_id"]}))

    async def scenario() -> tuple[list[Observation], Snapshot | None]:
        async with websockets.serve(gateway, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            conversation = await WebSocketConversation.open(f"ws://127.0.0.1:{port}",
                                                            timeout_s=5, quiet_s=0.2)
            replies = await conversation.send("hi")
            await conversation.close()
            return replies, conversation.snapshot()

    replies, snapshot = asyncio.run(scenario())
    assert [r.text for r in replies] == ["one", "two"] and replies[0].response is None
    assert snapshot is None


def test_a_testers_reply_counts_each_utterance_it_joins() -> None:
    """A reply names its last response; a bot tester's lists every utterance, and an
    ``utter`` step can match each, as in process."""
    frame = {"type": "reply", "text": "Fixed.\n\nSend 300 EUR?", "response": "utter_ask",
             "quick_replies": ["yes", "no"],
             "utterances": [{"response": "utter_corrected", "text": "Fixed."},
                            {"response": "utter_ask", "text": "Send 300 EUR?"}]}
    assert _observations(frame) == [Observation("Fixed.", "utter_corrected"),
                                    Observation("Send 300 EUR?", "utter_ask", ("yes", "no"))]
    del frame["utterances"]
    assert _observations(frame) == [Observation("Fixed.\n\nSend 300 EUR?", "utter_ask",
                                                ("yes", "no"))]


def test_a_dev_token_is_asked_for_the_bot_tester_role_and_a_refusal_explained() -> None:
    asked: list[str] = []

    def answer(status: int, body: str) -> Any:
        def process_request(connection: Any, request: Any) -> Any:
            asked.append(request.path)
            return connection.respond(status, body)
        return process_request

    async def token_from(status: int, body: str) -> str:
        async with websockets.serve(lambda ws: ws.close(), "127.0.0.1", 0,
                                    process_request=answer(status, body)) as server:
            port = server.sockets[0].getsockname()[1]
            return await dev_token(f"ws://127.0.0.1:{port}/ws", timeout_s=5)

    assert asyncio.run(token_from(200, '{"token": "T1", "tenant": "demo"}')) == "T1"
    assert asked == ["/dev/token?role=bot_tester"]
    with pytest.raises(ConnectionError, match="not in development mode; pass --token"):
        asyncio.run(token_from(404, "not found\n"))
    with pytest.raises(ConnectionError, match="HTTP 200: a page"):
        asyncio.run(token_from(200, "a page"))
