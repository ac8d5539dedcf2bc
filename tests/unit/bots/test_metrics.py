"""The counter an operator compares a canary against its stable version by."""

from __future__ import annotations

from agents.bots.metrics import BOT_TURNS, count_bot_turns


def count(tenant: str, version: str) -> float:
    return BOT_TURNS.labels(tenant, version)._value.get()


def test_recorded_turns_count_under_the_version_that_decided_them() -> None:
    stable, canary = "a" * 64, "b" * 64
    before = count("metrics-acme", stable[:12]), count("metrics-acme", canary[:12])
    count_bot_turns([("metrics-acme", stable), ("metrics-acme", canary),
                     ("metrics-acme", canary), ("metrics-acme", stable)],
                    [True, True, True, False])  # the last one was not recorded
    assert count("metrics-acme", stable[:12]) - before[0] == 1
    assert count("metrics-acme", canary[:12]) - before[1] == 2
