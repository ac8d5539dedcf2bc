"""Poison events: which failures are retried, which are dead-lettered, and how."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
)
from faust.exceptions import ProducerSendError
from redis.exceptions import (
    ClusterDownError,
    DataError,
    OutOfMemoryError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents.conversation import process_batch
from agents.dialogue.agent import DialogueStep
from agents.dialogue.turns import Incoming
from agents.nlu.agent import NluStep, Understood
from kernel.errors import DecodeError
from streams.batching import process_or_dead_letter
from streams.codecs import AvroCodec
from streams.dead_letters import (
    MAX_ERROR_CHARS,
    dead_letter_headers,
    is_unavailable,
    read_dead_letter,
)
from streams.keys import InvalidIdError
from tests.unit.test_codecs import chat_message

INBOUND = "chat.inbound"


def wrapped(cause: Exception) -> ProducerSendError:
    """A send error as Faust raises it: its own class, the producer's error as cause."""
    try:
        raise ProducerSendError(f"Error while sending: {cause!r}") from cause
    except ProducerSendError as exc:
        return exc


# -- classification --------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    RedisConnectionError("Connection refused"), RedisTimeoutError("timed out"),
    ClusterDownError("CLUSTERDOWN"), TryAgainError("TRYAGAIN"), OutOfMemoryError("OOM"),
    RedisClusterException("cannot be connected"), KafkaTimeoutError(), KafkaConnectionError(),
    NotLeaderForPartitionError(), wrapped(KafkaTimeoutError()), ProducerSendError("no cause"),
    TimeoutError(), ConnectionResetError(), OSError("network unreachable"),
], ids=lambda e: type(e).__name__)
def test_an_unavailable_dependency_is_retried(error: Exception) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize("error", [
    InvalidIdError("tenant id", "a b"), DecodeError("not avro", size=3),
    KeyError("payload"), ValueError("a record of 2000000 bytes does not fit a batch"),
    TypeError("'NoneType' object is not subscriptable"), ZeroDivisionError(),
    ResponseError("ERR Error running script: bad argument"), DataError("Invalid input"),
    MessageSizeTooLargeError(), RecordTooLargeError(), wrapped(RecordTooLargeError()),
], ids=lambda e: type(e).__name__)
def test_any_other_failure_is_the_events_own(error: Exception) -> None:
    assert not is_unavailable(error)


# -- the record format -----------------------------------------------------------------


def message(topic: str = INBOUND, offset: int = 7, value: bytes = b"\x00junk") -> Any:
    return SimpleNamespace(topic=topic, partition=2, offset=offset, timestamp=1765000000.5,
                           key=b"c42", value=value)


def test_a_dead_letter_says_what_failed_and_where_the_event_came_from() -> None:
    error = InvalidIdError("tenant id", "a b")
    headers = dead_letter_headers(message(), error, "conversation", now_ms=1765000001000)
    assert all(isinstance(name, str) and isinstance(value, bytes) for name, value in headers)
    letter = read_dead_letter(headers)
    assert letter.error == str(error)
    assert letter.error.startswith("invalid tenant id 'a b'")
    assert letter.error_class == "streams.keys.InvalidIdError"
    assert (letter.topic, letter.partition, letter.offset) == (INBOUND, 2, 7)
    assert letter.timestamp_ms == 1765000000500
    assert letter.consumer == "conversation" and letter.dead_lettered_at_ms == 1765000001000
    assert read_dead_letter(dict(headers)) == letter  # as confluent-kafka lists them, or a dict


def test_a_long_error_is_cut_and_an_empty_one_named() -> None:
    long = dead_letter_headers(message(), ValueError("x" * 5000), "knowledge")
    assert len(read_dead_letter(long).error) == MAX_ERROR_CHARS
    empty = read_dead_letter(dead_letter_headers(message(), KeyError(), "knowledge"))
    assert empty.error == "KeyError()" and empty.error_class == "KeyError"


def test_an_event_without_a_timestamp_says_so() -> None:
    msg = SimpleNamespace(topic=INBOUND, partition=0, offset=1, timestamp=None)
    assert read_dead_letter(dead_letter_headers(msg, KeyError("k"), "c")).timestamp_ms == -1


# -- routing: one bad event does not lose the good ones --------------------------------


def event(value: str, topic: str = INBOUND) -> Any:
    return SimpleNamespace(message=message(topic, value=value.encode()))


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def __call__(self, event: Any, error: BaseException, what: str) -> None:
        self.sent.append((event.message.value.decode(), type(error).__name__, what))


class Process:
    """Fails on a batch that holds "bad"; fails with a Redis outage ``outages`` times."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls: list[list[str]] = []
        self.done: list[str] = []

    async def __call__(self, events: Sequence[Any]) -> None:
        values = [e.message.value.decode() for e in events]
        self.calls.append(values)
        if self.outages:
            self.outages -= 1
            raise RedisConnectionError("redis is down")
        if "bad" in values:
            raise InvalidIdError("conversation id", "bad")
        self.done += values


@pytest.mark.asyncio
async def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_processed_in_order(
        caplog: pytest.LogCaptureFixture) -> None:
    process, dead = Process(), DeadLetters()
    events = [event("m1"), event("bad"), event("m2")]
    await process_or_dead_letter(events, process, "conversation", dead)
    assert process.calls == [["m1", "bad", "m2"], ["m1"], ["bad"], ["m2"]]
    assert process.done == ["m1", "m2"]
    assert dead.sent == [("bad", "InvalidIdError", "conversation")]
    assert "conversation.batch.poisoned size=3" in caplog.text


@pytest.mark.asyncio
async def test_a_dependency_outage_is_retried_and_dead_letters_nothing() -> None:
    process, dead = Process(outages=2), DeadLetters()
    await process_or_dead_letter([event("m1"), event("m2")], process, "conversation", dead)
    assert process.done == ["m1", "m2"] and len(process.calls) == 3
    assert dead.sent == []


@pytest.mark.asyncio
async def test_an_outage_while_isolating_the_poison_is_retried_too() -> None:
    process, dead = Process(), DeadLetters()

    async def flaky(events: Sequence[Any]) -> None:
        if len(process.calls) == 1:  # the first event alone: Redis goes away once
            process.calls.append(["outage"])
            raise RedisConnectionError("redis is down")
        await process(events)

    await process_or_dead_letter([event("bad"), event("m1")], flaky, "conversation", dead)
    assert process.done == ["m1"] and dead.sent == [("bad", "InvalidIdError", "conversation")]


@pytest.mark.asyncio
async def test_a_lone_poison_event_is_dead_lettered_without_another_try() -> None:
    process, dead = Process(), DeadLetters()
    await process_or_dead_letter([event("bad")], process, "knowledge", dead)
    assert process.calls == [["bad"]] and dead.sent == [("bad", "InvalidIdError", "knowledge")]


@pytest.mark.asyncio
async def test_cancellation_is_not_poison() -> None:
    async def cancelled(events: Sequence[Any]) -> None:
        raise asyncio.CancelledError

    dead = DeadLetters()
    with pytest.raises(asyncio.CancelledError):
        await process_or_dead_letter([event("m1"), event("m2")], cancelled, "c", dead)
    assert dead.sent == []


# -- the conversation agent's batch (the reproduction) ---------------------------------


def bad_tenant_batch() -> tuple[list[Any], Any, Any]:
    """A batch whose ChatUnderstood holds a tenant id with a space, as the issue's attack:
    the dialogue step's ``understood`` raises InvalidIdError for it."""
    ids = {"good": ("t1", "c1"), "bad": ("t 1", "c1"), "long": ("t1", "c" * 500)}

    async def understand(events: Sequence[Any]) -> Understood:
        made: list[dict[str, Any] | None] = []
        for e in events:
            tenant, conversation = ids[e.message.value.decode()]
            made.append({"event_id": e.message.value.decode(), "tenant_id": tenant,
                         "conversation_id": conversation})
        return Understood(made, asyncio.gather())

    class Respond:
        understood = staticmethod(DialogueStep.understood)

        def __init__(self) -> None:
            self.answered: list[str] = []

        async def decode_result(self, event: Any) -> Incoming | None:
            return None

        async def __call__(self, batch: Sequence[Incoming]) -> None:
            self.answered += [item.msg["event_id"] for item in batch]

    return [event("good"), event("bad"), event("long")], understand, Respond()


@pytest.mark.asyncio
async def test_an_invalid_id_no_longer_escapes_the_conversation_agent() -> None:
    events, understand, respond = bad_tenant_batch()

    async def process(batch: list[Any]) -> None:
        await process_batch(batch, inbound=INBOUND, understand=understand, respond=respond)

    with pytest.raises(InvalidIdError):  # what used to reach Faust and stop the agent
        await process(events)
    dead = DeadLetters()
    await process_or_dead_letter(events, process, "conversation", dead)
    assert respond.answered == ["good"]
    assert dead.sent == [("bad", "InvalidIdError", "conversation"),
                         ("long", "InvalidIdError", "conversation")]


@pytest.mark.asyncio
async def test_the_nlu_step_dead_letters_undecodable_events_and_invalid_ids() -> None:
    codec = AvroCodec("chat_message")
    sent: list[tuple[bytes, str]] = []

    async def dead_letter(event: Any, error: BaseException, what: str) -> None:
        sent.append((event.message.value, type(error).__name__))

    ctx = SimpleNamespace(inbound=None, understood=None,
                          dead_letters=SimpleNamespace(send=dead_letter),
                          codec=lambda name, topic: AvroCodec(name))
    step = NluStep(ctx, models=lambda _tenant: SimpleNamespace())  # type: ignore[arg-type,return-value]
    values = [b"\x00not avro", codec.encode(chat_message(tenant_id="acme/eu")),
              codec.encode(chat_message(conversation_id="c" * 500))]
    events: list[Any] = [SimpleNamespace(message=message(value=v)) for v in values]
    understood = await step(events)
    assert understood.events == [None, None, None]
    assert sent == [(values[0], "DecodeError"), (values[1], "InvalidIdError"),
                    (values[2], "InvalidIdError")]
