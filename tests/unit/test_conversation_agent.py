"""The conversation agent's batch: the NLU step, then the dialogue step, in the batch's order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.conversation import process_batch
from agents.dialogue.turns import Incoming, Kind
from agents.nlu.agent import Understood
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

    async def __call__(self, events: Sequence[Any]) -> Understood:
        self.calls.append([e.message.value for e in events])
        return Understood([None if e.message.value == "bad" else {"event_id": e.message.value}
                           for e in events], asyncio.gather())


class Respond:
    """Records each batch; fails with a Redis outage ``failures`` times first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[tuple[str, bool]]] = []

    def understood(self, msg: dict[str, Any]) -> Incoming:
        return Incoming(ConversationKeys("t", "c"), msg, Kind.MESSAGE)

    async def decode_result(self, event: Any) -> Incoming | None:
        if event.message.value == "bad":
            return None  # the real step sends it to knowledge.results.dlq
        return Incoming(ConversationKeys("t", "c"), {"event_id": event.message.value},
                        Kind.KNOWLEDGE)

    async def __call__(self, batch: Sequence[Incoming]) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("redis is down")
        self.batches.append([(i.msg["event_id"], i.kind is not Kind.MESSAGE) for i in batch])


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


async def test_the_batch_ends_once_the_broker_holds_what_the_nlu_step_sent() -> None:
    """The dialogue step runs while ChatUnderstood events are on their way; the batch
    (and so the acknowledgement of its events) waits for them."""
    delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    order: list[str] = []

    class Slow(Understand):
        async def __call__(self, events: Sequence[Any]) -> Understood:
            return Understood([{"event_id": e.message.value} for e in events], delivered)

    class Recording(Respond):
        async def __call__(self, batch: Sequence[Incoming]) -> None:
            order.append("dialogue")

    batch = asyncio.create_task(process_batch([event(INBOUND, "m1")], inbound=INBOUND,
                                              understand=Slow(), respond=Recording()))
    await asyncio.sleep(0.01)
    assert order == ["dialogue"] and not batch.done()
    delivered.set_result(None)
    await batch


async def test_a_chat_understood_the_broker_refused_fails_the_batch() -> None:
    """The agent processes the whole batch again (process_until_done around it)."""
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(KafkaTimeoutError())

    class Refused(Understand):
        async def __call__(self, events: Sequence[Any]) -> Understood:
            return Understood([{"event_id": e.message.value} for e in events], failed)

    respond = Respond()
    with pytest.raises(KafkaTimeoutError):
        await process_batch([event(INBOUND, "m1")], inbound=INBOUND, understand=Refused(),
                            respond=respond)
    assert respond.batches == [[("m1", False)]]
