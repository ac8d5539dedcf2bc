"""The conversation agent's batch: the NLU step, then the dialogue step, in the batch's order."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.conversation import process_batch
from agents.dialogue.turns import Incoming
from streams.keys import ConversationKeys

INBOUND = "chat.inbound"
RESULTS = "knowledge.results"

pytestmark = pytest.mark.asyncio


def event(topic: str, value: str) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, value=value))


class Understand:
    """Understands every value but "bad" (undecodable: None, as the NLU step returns)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, events: Sequence[Any]) -> list[dict[str, Any] | None]:
        self.calls.append([e.message.value for e in events])
        return [None if e.message.value == "bad" else {"event_id": e.message.value}
                for e in events]


class Respond:
    """Records each batch; fails with a Redis outage ``failures`` times first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[tuple[str, bool]]] = []

    def understood(self, msg: dict[str, Any]) -> Incoming:
        return Incoming(ConversationKeys("t", "c"), msg, False)

    async def decode_result(self, event: Any) -> Incoming | None:
        if event.message.value == "bad":
            return None  # the real step sends it to knowledge.results.dlq
        return Incoming(ConversationKeys("t", "c"), {"event_id": event.message.value}, True)

    async def __call__(self, batch: Sequence[Incoming]) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("redis is down")
        self.batches.append([(i.msg["event_id"], i.is_result) for i in batch])


async def test_messages_are_understood_together_then_answered_with_results_in_order() -> None:
    understand, respond = Understand(), Respond()
    events = [event(INBOUND, "m1"), event(RESULTS, "r1"), event(INBOUND, "bad"),
              event(INBOUND, "m2"), event(RESULTS, "bad"), event(RESULTS, "r2")]
    await process_batch(events, inbound=INBOUND, understand=understand, respond=respond)
    assert understand.calls == [["m1", "bad", "m2"]]  # one model call for the batch
    assert respond.batches == [[("m1", False), ("r1", True), ("m2", False), ("r2", True)]]


async def test_a_batch_with_nothing_decodable_is_not_answered() -> None:
    understand, respond = Understand(), Respond()
    await process_batch([event(INBOUND, "bad"), event(RESULTS, "bad")], inbound=INBOUND,
                        understand=understand, respond=respond)
    assert understand.calls == [["bad"]] and respond.batches == []


async def test_a_results_only_batch_asks_the_model_nothing() -> None:
    understand, respond = Understand(), Respond()
    await process_batch([event(RESULTS, "r1")], inbound=INBOUND, understand=understand,
                        respond=respond)
    assert understand.calls == [[]]
    assert respond.batches == [[("r1", True)]]


async def test_a_redis_outage_retries_the_dialogue_step_alone() -> None:
    """The NLU step's events were produced once; only the dialogue step runs again."""
    understand, respond = Understand(), Respond(failures=2)
    await process_batch([event(INBOUND, "m1")], inbound=INBOUND, understand=understand,
                        respond=respond)
    assert understand.calls == [["m1"]]
    assert respond.batches == [[("m1", False)]]
