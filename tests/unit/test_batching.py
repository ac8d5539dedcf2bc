"""process_until_done: a batch is processed again while a dependency is unavailable."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from streams.batching import process_until_done

pytestmark = pytest.mark.asyncio


class Flaky:
    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


async def test_dependency_failures_are_retried_until_the_batch_succeeds(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="streams.batching")
    process = Flaky(RedisConnectionError("down"), RedisClusterException("cannot be connected"),
                    KafkaTimeoutError(), TimeoutError())
    await process_until_done(process, "dialogue", first_pause_s=0.001, max_pause_s=0.002)
    assert process.calls == 5
    assert caplog.text.count("dialogue.batch.retrying") == 4
    assert "dialogue.batch.recovered attempts=5" in caplog.text


async def test_other_errors_are_not_retried() -> None:
    process = Flaky(KeyError("payload"))
    with pytest.raises(KeyError):
        await process_until_done(process, "dialogue", first_pause_s=0.001)
    assert process.calls == 1
