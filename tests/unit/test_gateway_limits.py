"""The rate limits' arithmetic (GCRA) and configuration, without Redis."""

from __future__ import annotations

from typing import cast

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.limits import (
    OUTAGE_SKIP_S,
    Limits,
    Rate,
    RateLimiter,
    decision,
    gcra,
    limit_keys,
)
from kernel.errors import ConfigError
from kernel.settings import Settings
from streams.keys import InvalidIdError

SECOND = 1_000_000  # µs


def run(rate: Rate, arrivals_us: list[int]) -> list[int]:
    """The wait of each arrival (0: allowed), keeping the TAT as the script does."""
    tat: int | None = None
    waits = []
    for now in arrivals_us:
        new_tat, wait = gcra(tat, now, rate)
        if wait == 0:
            tat = new_tat
        waits.append(wait)
    return waits


def test_a_burst_is_allowed_at_once_and_the_next_message_waits_one_interval() -> None:
    rate = Rate(60, 10)  # one a second, ten at once
    waits = run(rate, [0] * 12)
    assert waits[:10] == [0] * 10
    assert waits[10:] == [SECOND, SECOND]  # refused ones do not push the wait further


def test_the_sustained_rate_is_allowed_for_ever() -> None:
    rate = Rate(300, 50)  # one each 200 ms
    assert run(rate, [i * 200_000 for i in range(1000)]) == [0] * 1000


def test_faster_than_the_rate_is_refused_once_the_burst_is_spent() -> None:
    rate = Rate(60, 10)
    waits = run(rate, [i * 500_000 for i in range(40)])  # two a second
    allowed = waits.count(0)
    # 10 at once plus one a second over the 19.5 s: about 30 of the 40.
    assert 28 <= allowed <= 31
    assert all(0 < w <= SECOND for w in waits if w)


def test_after_waiting_retry_after_the_message_is_allowed() -> None:
    rate = Rate(1000, 100)
    tat = None
    for _ in range(100):
        tat, wait = gcra(tat, 0, rate)
        assert wait == 0
    _, wait = gcra(tat, 0, rate)
    assert wait == rate.interval_us == 60_000
    assert gcra(tat, wait, rate)[1] == 0
    assert gcra(tat, wait - 1, rate)[1] == 1


def test_an_idle_user_gets_the_whole_burst_back_and_no_more() -> None:
    rate = Rate(60, 10)
    waits = run(rate, [0] * 10 + [3600 * SECOND] * 11)
    assert waits[10:20] == [0] * 10 and waits[20] == SECOND


def test_decision_names_the_longer_wait_in_seconds_rounded_up() -> None:
    assert decision(0, 0).allowed
    refused = decision(1_500, 200)
    assert (refused.allowed, refused.retry_after_s, refused.limited_by) == (False, 0.002, "user")
    assert decision(0, 2_000_000).limited_by == "tenant"


@pytest.mark.parametrize("text, rate", [("60:10", Rate(60, 10)), (" 0.5 : 1 ", Rate(0.5, 1))])
def test_rates_are_written_rate_colon_burst(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["60", "60/10", "0:10", "60:0", "-1:2", "x:y", ""])
def test_a_malformed_rate_is_refused_in_plain_words(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate.parse(text)


def test_settings_give_the_tiers_of_the_issue_and_refuse_bad_rates_at_start_up() -> None:
    limits = Limits.from_settings(Settings.from_env({}))
    assert limits.for_tier("default") == Rate(60, 10)
    assert limits.for_tier("authenticated") == Rate(300, 50)
    assert limits.for_tier("premium") == Rate(1000, 100)
    assert limits.for_tier("made-up") == Rate(60, 10)  # the least allowed
    assert Limits.from_settings(Settings.from_env({}, rate_tenant="off")).tenant is None
    with pytest.raises(ConfigError, match="PARLEY_RATE_PREMIUM"):
        Settings.from_env({"PARLEY_RATE_PREMIUM": "1000"})
    with pytest.raises(ConfigError, match="PARLEY_RATE_DEFAULT"):
        Settings.from_env({"PARLEY_RATE_DEFAULT": "off"})


def test_limits_without_a_default_tier_are_refused() -> None:
    with pytest.raises(ValueError, match="default"):
        Limits({"premium": Rate(1, 1)})


def test_a_users_and_its_tenants_keys_share_one_slot_and_ids_are_checked() -> None:
    user, tenant = limit_keys("acme", "u1")
    assert user.split("}")[0] == tenant.split("}")[0] == "parley:{rl:acme"
    assert limit_keys("acme", "u2")[0] != user
    with pytest.raises(InvalidIdError):
        limit_keys("acme", "u}{x")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_a_refused_user_is_refused_locally_until_retry_after_then_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []
    # u allowed, u refused for 2.5 s, another user allowed, u allowed once the wait is over
    answers = iter([[(0, 0)], [(2_500_000, 0)], [(0, 0)], [(0, 0)]])

    async def script(redis: object, source: str, calls: list[tuple[str, tuple[object, ...]]],
                     **_: object) -> list[tuple[int, int]]:
        asked.append(len(calls))
        return next(answers)

    monkeypatch.setattr("gateway.limits.on_each_primary", script)
    clock = FakeClock()
    limiter = RateLimiter(cast(RedisCluster, None), clock=clock)
    limits = Limits({"default": Rate(60, 1)})
    assert (await limiter.check("t", "u", "default", limits)).allowed
    refused = await limiter.check("t", "u", "default", limits)
    assert (refused.allowed, refused.retry_after_s) == (False, 2.5)
    clock.now += 1
    again = await limiter.check("t", "u", "default", limits)  # not asked of Redis
    assert (again.allowed, again.retry_after_s, again.limited_by) == (False, 1.5, "user")
    assert limiter.refused("t", "u") == again  # what the gateway answers before its hold
    assert limiter.refused("t", "other") is None
    assert len(asked) == 2
    assert (await limiter.check("t", "other", "default", limits)).allowed  # others are asked
    clock.now += 1.5
    assert limiter.refused("t", "u") is None  # the wait is over
    assert (await limiter.check("t", "u", "default", limits)).allowed
    assert len(asked) == 4


def test_a_tenants_rates_replace_only_what_it_sets() -> None:
    base = Limits({"default": Rate(60, 10), "premium": Rate(1000, 100)}, tenant=Rate(6000, 500))
    own = base.overridden({"premium": "2000:200", "tenant": "off"})
    assert own.for_tier("premium") == Rate(2000, 200)
    assert own.for_tier("default") == Rate(60, 10) and own.tenant is None
    assert base.overridden({}).tiers == base.tiers
    assert base.overridden({"tenant": "120:20"}).tenant == Rate(120, 20)


@pytest.mark.asyncio
async def test_after_redis_failed_checks_go_through_without_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """During an outage a message must not first wait out Redis's timeouts in the limiter
    before its sequence number is refused: checks fail open at once for a while."""
    asked: list[int] = []
    answers: list[object] = [ConnectionError("frozen"), [(0, 0)]]

    async def script(redis: object, source: str, calls: list[tuple[str, tuple[object, ...]]],
                     **_: object) -> list[tuple[int, int]]:
        asked.append(len(calls))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return cast(list[tuple[int, int]], answer)

    monkeypatch.setattr("gateway.limits.on_each_primary", script)
    clock = FakeClock()
    limiter = RateLimiter(cast(RedisCluster, None), clock=clock)
    limits = Limits({"default": Rate(60, 1)})
    assert (await limiter.check("t", "u", "default", limits)).allowed  # failed open
    clock.now += OUTAGE_SKIP_S - 0.1
    assert (await limiter.check("t", "u", "default", limits)).allowed
    assert asked == [1]  # not asked again inside the window
    clock.now += 0.2
    assert (await limiter.check("t", "u", "default", limits)).allowed
    assert asked == [1, 1]  # asked again after it
