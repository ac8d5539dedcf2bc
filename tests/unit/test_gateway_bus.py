"""Delivery reports become the outcome a client is told: held, refused, or unconfirmed."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError

from gateway.bus import DeliveryError, _resolve

pytestmark = pytest.mark.asyncio


async def _outcome(err: KafkaError | None) -> int | DeliveryError:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    _resolve([(future, err, 3)])
    try:
        return await future
    except DeliveryError as exc:
        return exc


async def test_a_delivered_event_resolves_to_its_partition() -> None:
    assert await _outcome(None) == 3


async def test_a_timed_out_event_may_have_been_written() -> None:
    # librdkafka gives up after delivery.timeout.ms with the request maybe at the
    # broker: the client must not be told the message was not accepted.
    outcome = await _outcome(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert isinstance(outcome, DeliveryError) and outcome.possibly_written


@pytest.mark.parametrize("code", [
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._PURGE_QUEUE,
])
async def test_a_refused_event_was_not_written(code: int) -> None:
    outcome = await _outcome(KafkaError(code))
    assert isinstance(outcome, DeliveryError) and not outcome.possibly_written
