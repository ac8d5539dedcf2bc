"""The action agent on the real embedded broker: requests in, results out, keyed by
conversation; a slow action holds up nobody else; failures are results; poison goes to
the dead-letter topic."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message, Producer
from pydantic import BaseModel

from agents.actions import (
    ActionContext,
    ActionFailed,
    ActionOutcome,
    ActionRegistry,
    ActionSettings,
    FailureKind,
    action_request,
    read_result,
)
from agents.actions.agent import register_action_agent
from infra.ports import find_free_ports
from kernel.settings import Settings
from streams.app import create_app
from streams.codecs import AvroCodec
from streams.dead_letters import read_dead_letter
from streams.follow import TopicFollower
from streams.security import bootstrap_config
from streams.topics import ACTIONS_REQUESTS, ACTIONS_RESULTS, dlq_of


class EchoIn(BaseModel):
    text: str
    delay_s: float = 0.0


class EchoOut(BaseModel):
    text: str
    key: str


def make_registry() -> ActionRegistry:
    registry = ActionRegistry()

    @registry.action("echo", inputs=EchoIn, outputs=EchoOut)
    async def echo(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        await asyncio.sleep(inputs.delay_s)
        return EchoOut(text=inputs.text, key=ctx.idempotency_key)

    @registry.action("refuse", inputs=EchoIn, outputs=EchoOut)
    async def refuse(inputs: EchoIn, ctx: ActionContext) -> EchoOut:
        raise ActionFailed(f"no ticket for {inputs.text}")

    return registry


def envelope(i: int, conversation: str) -> dict[str, Any]:
    return {"event_id": f"e{i}", "tenant_id": "acme", "conversation_id": conversation,
            "user_id": "u1", "channel": "ws", "seq": i, "timestamp": 1_700_000_000_000,
            "trace_id": f"tr{i}", "reply_route": "gw-1",
            "payload": {"client_msg_id": f"m{i}"}}


@dataclass
class Collected:
    """Records of a topic as they arrive, with the moment each arrived."""

    records: list[tuple[float, Message]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, batch: list[Message]) -> None:
        now = time.monotonic()
        with self.lock:
            self.records.extend((now, msg) for msg in batch)

    def __len__(self) -> int:
        with self.lock:
            return len(self.records)


@pytest.fixture
def results(settings: Settings) -> Iterator[Collected]:
    collected = Collected()
    follower = TopicFollower(settings.kafka_bootstrap, settings.topic(ACTIONS_RESULTS),
                             collected.take, from_beginning=True, poll_timeout_s=0.05)
    follower.assign()
    follower.start()
    yield collected
    follower.stop()


async def run_agent(settings: Settings, tmp_path: Path, registry: ActionRegistry,
                    requests: list[tuple[bytes, bytes]], collected: Collected, expected: int,
                    action_settings: ActionSettings | None = None,
                    timeout_s: float = 60) -> None:
    """Start a worker with the action agent, produce ``requests``, wait for ``expected``
    results (on ``collected``), stop the worker."""
    ctx = create_app(settings.replace(worker_web_port=find_free_ports(1)[0], data_dir=tmp_path))
    register_action_agent(ctx, registry,
                          action_settings or ActionSettings(timeout_s=10.0, concurrency=8))
    producer = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    for key, value in requests:
        producer.produce(settings.topic(ACTIONS_REQUESTS), key=key, value=value)
    assert producer.flush(10) == 0
    await ctx.app.start()
    try:
        deadline = time.monotonic() + timeout_s
        while len(collected) < expected:
            assert time.monotonic() < deadline, f"{len(collected)} of {expected} results"
            await asyncio.sleep(0.05)
    finally:
        await ctx.app.stop()


def request_value(i: int, conversation: str, action: str, inputs: dict[str, Any]) -> bytes:
    return AvroCodec("action_request").encode(
        action_request(envelope(i, conversation), action, inputs))


def headers_of(msg: Message) -> list[tuple[str, bytes | None]]:
    raw = msg.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else raw
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in pairs]


def decoded(collected: Collected) -> dict[str, tuple[float, bytes, dict[str, Any]]]:
    """Results by the id of the request they answer: (arrival, key, record)."""
    codec = AvroCodec("action_result")
    out = {}
    for at, msg in collected.records:
        record = codec.decode(msg.value())
        out[record["payload"]["in_reply_to"]] = (at, msg.key() or b"", record)
    return out


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_requests_get_results_keyed_by_conversation_and_failures_are_failures(
        settings: Settings, tmp_path: Path, results: Collected) -> None:
    requests = [
        (b"c1", request_value(1, "c1", "echo", {"text": "hello"})),
        (b"c2", request_value(2, "c2", "refuse", {"text": "order 9"})),
        (b"c3", request_value(3, "c3", "freeze_card", {})),
        (b"c4", request_value(4, "c4", "echo", {"txt": "typo"})),
    ]
    await run_agent(settings, tmp_path, make_registry(), requests, results, expected=4)

    got = decoded(results)
    assert sorted(got) == ["e1.c", "e2.c", "e3.c", "e4.c"]
    _, key, record = got["e1.c"]
    assert key == b"c1" and record["event_id"] == "e1.c.a" and record["seq"] == 1
    assert (record["tenant_id"], record["conversation_id"], record["trace_id"]) == \
        ("acme", "c1", "tr1")
    assert read_result(record) == ("e1.c", ActionOutcome(
        "echo", True, {"text": "hello", "key": "e1.c"},
        duration_ms=record["payload"]["duration_ms"]))

    failures = {request: read_result(got[request][2])[1] for request in ("e2.c", "e3.c", "e4.c")}
    assert all(not outcome.ok and outcome.outputs == {} for outcome in failures.values())
    assert (failures["e2.c"].kind, failures["e2.c"].error) == \
        (FailureKind.FAILED, "no ticket for order 9")
    assert failures["e3.c"].kind is FailureKind.UNKNOWN_ACTION
    assert failures["e3.c"].error == "no action 'freeze_card' is registered (known: echo, refuse)"
    assert failures["e4.c"].kind is FailureKind.INVALID_INPUTS
    assert failures["e4.c"].error == "invalid inputs: text: Field required"
    assert [got[r][1] for r in ("e2.c", "e3.c", "e4.c")] == [b"c2", b"c3", b"c4"]


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_slow_action_does_not_hold_up_other_conversations(
        settings: Settings, tmp_path: Path, results: Collected) -> None:
    # The slow request first, on the conversation keyed like the others' partitions
    # or not: either way, the fast ones must not wait for it.
    requests = [(b"slow", request_value(0, "slow", "echo", {"text": "slow", "delay_s": 5}))]
    requests += [(f"c{i}".encode(), request_value(i, f"c{i}", "echo", {"text": f"fast {i}"}))
                 for i in range(1, 7)]
    await run_agent(settings, tmp_path, make_registry(), requests, results, expected=7,
                    action_settings=ActionSettings(timeout_s=10.0, concurrency=4))

    got = decoded(results)
    slow_at = got["e0.c"][0]
    fast_at = [got[f"e{i}.c"][0] for i in range(1, 7)]
    assert all(got[f"e{i}.c"][2]["payload"]["ok"] for i in range(7))
    # Every fast result came while the slow action was still sleeping.
    assert max(fast_at) < slow_at - 3.0, (slow_at - max(fast_at))
    assert got["e0.c"][2]["payload"]["duration_ms"] >= 5000


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_timeout_is_a_failure_result(settings: Settings, tmp_path: Path,
                                             results: Collected) -> None:
    requests = [(b"c1", request_value(1, "c1", "echo", {"text": "late", "delay_s": 30}))]
    began = time.monotonic()
    await run_agent(settings, tmp_path, make_registry(), requests, results, expected=1,
                    action_settings=ActionSettings(timeout_s=0.5, concurrency=2))
    _, outcome = read_result(decoded(results)["e1.c"][2])
    assert (outcome.ok, outcome.kind, outcome.error) == \
        (False, FailureKind.TIMEOUT, "no result within 0.5 s")
    assert time.monotonic() - began < 30


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_poison_requests_go_to_the_dead_letter_topic_and_the_stream_goes_on(
        settings: Settings, tmp_path: Path, results: Collected) -> None:
    dead = Collected()
    dlq = TopicFollower(settings.kafka_bootstrap, settings.topic(dlq_of(ACTIONS_REQUESTS)),
                        dead.take, from_beginning=True, poll_timeout_s=0.05)
    dlq.assign()
    dlq.start()
    try:
        requests = [
            (b"c1", b"not avro at all"),
            (b"c2", request_value(2, "not a conversation id", "echo", {"text": "x"})),
            (b"c3", request_value(3, "c3", "echo", {"text": "after the poison"})),
        ]
        await run_agent(settings, tmp_path, make_registry(), requests, results, expected=1)
        deadline = time.monotonic() + 20
        while len(dead) < 2:
            assert time.monotonic() < deadline, "the poison never reached the DLQ"
            await asyncio.sleep(0.05)
    finally:
        dlq.stop()
    assert sorted(decoded(results)) == ["e3.c"]
    letters = sorted(((msg.key(), msg.value(), read_dead_letter(headers_of(msg)))
                      for _, msg in dead.records), key=lambda item: item[0] or b"")
    (key1, value1, letter1), (key2, _, letter2) = letters
    assert (key1, value1) == (b"c1", b"not avro at all")  # the original bytes, unchanged
    assert letter1.error_class == "kernel.errors.DecodeError" and letter1.consumer == "actions"
    assert letter1.topic == settings.topic(ACTIONS_REQUESTS)
    assert key2 == b"c2" and letter2.error_class == "streams.keys.InvalidIdError"
    assert "invalid conversation id 'not a conversation id'" in letter2.error


# --- a flow's action through the whole worker ------------------------------------------

ORDER_FLOW = """\
flows:
  track_order:
    title: tracking your order
    start:
      intents: [order_status]
    steps:
      - collect: order_id
      - action: lookup_order
        outputs: {status: order_state}
        on_error: utter_lookup_failed
      - say: utter_order_state
"""
ORDER_RESPONSES = """\
  utter_order_state:
    - "Order {order_id} is {order_state}."
  utter_lookup_failed:
    - "Sorry, I could not look up order {order_id} just now."
"""


def order_bot(folder: Path) -> Path:
    """The `parley init` bot, whose order flow asks the `lookup_order` action."""
    from agents.dialogue.cli import TEMPLATE

    shutil.copytree(TEMPLATE, folder)
    flows = (folder / "flows.yml").read_text()
    start = flows.index("  track_order:")
    end = flows.index("  human_handoff:")
    (folder / "flows.yml").write_text(flows[:start] + ORDER_FLOW.split("flows:\n", 1)[1]
                                      + flows[end:])
    (folder / "responses.yml").write_text((folder / "responses.yml").read_text()
                                          + ORDER_RESPONSES)
    (folder / "slots.yml").write_text((folder / "slots.yml").read_text()
                                      + "  order_state:\n    type: text\n")
    (folder / "actions.yml").write_text(
        "actions:\n  lookup_order:\n    inputs: [order_id]\n    outputs: [status]\n")
    return folder


class OrderIn(BaseModel):
    order_id: str


class OrderOut(BaseModel):
    status: str


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_a_flow_waits_for_its_action_and_tells_only_what_it_returned(
        settings: Settings, tmp_path: Path) -> None:
    from agents.conversation import register_conversation_agent
    from agents.dialogue.agent import DialogueStep
    from agents.dialogue.loader import load_bot
    from agents.dialogue.manager import DialogueManager
    from agents.dialogue.training import ensure_trained
    from agents.nlu.agent import NluStep
    from agents.nlu.model import NLUModel
    from streams.topics import CHAT_INBOUND, CHAT_OUTBOUND

    bot = load_bot(order_bot(tmp_path / "shop"))
    trained = await asyncio.to_thread(ensure_trained, bot, tmp_path / "trained")
    registry = ActionRegistry()
    looked_up: list[tuple[str, str]] = []

    @registry.action("lookup_order", inputs=OrderIn, outputs=OrderOut)
    async def lookup_order(inputs: OrderIn, ctx: ActionContext) -> OrderOut:
        looked_up.append((inputs.order_id, ctx.idempotency_key))
        if inputs.order_id != "12345":
            raise ActionFailed(f"the shop has no order {inputs.order_id}")
        return OrderOut(status="on its way")

    ctx = create_app(settings.replace(worker_web_port=find_free_ports(1)[0],
                                      data_dir=tmp_path / "worker"))
    register_action_agent(ctx, registry, ActionSettings(timeout_s=5.0, concurrency=4))
    manager, model = DialogueManager(bot), NLUModel.load(trained.nlu_dir)
    dialogue = DialogueStep(ctx, lambda tenant, user, state: manager)
    register_conversation_agent(ctx, NluStep(ctx, lambda tenant, user: model), dialogue)
    ctx.app.closers.append(dialogue.marked)

    replies = Collected()
    outbound = TopicFollower(settings.kafka_bootstrap, settings.topic(CHAT_OUTBOUND),
                             replies.take, from_beginning=True, poll_timeout_s=0.05)
    outbound.assign()
    outbound.start()
    codec = AvroCodec("chat_message")
    producer = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    for i, (conversation, text) in enumerate([("found", "where is my order 12345?"),
                                              ("missing", "where is my order 99999?")]):
        message = {**envelope(i, conversation), "event_id": f"in-{conversation}", "seq": 1,
                   "timestamp": int(time.time() * 1000),
                   "payload": {"text": text, "client_msg_id": f"m{i}", "locale": None}}
        producer.produce(settings.topic(CHAT_INBOUND), key=conversation.encode(),
                         value=codec.encode(message))
    assert producer.flush(10) == 0

    def texts() -> dict[str, list[str]]:
        reply_codec = AvroCodec("bot_reply")
        by_conversation: dict[str, list[str]] = {}
        with replies.lock:
            for _, msg in replies.records:
                reply = reply_codec.decode(msg.value())
                by_conversation.setdefault(reply["conversation_id"], []).append(
                    reply["payload"]["text"])
        return by_conversation

    await ctx.app.start()
    try:
        deadline = time.monotonic() + 90
        while not all(texts().get(c) for c in ("found", "missing")):
            assert time.monotonic() < deadline, texts()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # nothing more comes for either conversation
    finally:
        await ctx.app.stop()
        outbound.stop()
    assert texts() == {"found": ["Order 12345 is on its way."],
                       "missing": ["Sorry, I could not look up order 99999 just now."]}
    assert sorted(looked_up) == [("12345", "in-found.c"), ("99999", "in-missing.c")]
