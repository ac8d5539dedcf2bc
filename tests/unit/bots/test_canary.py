"""The keys of a tenant's stable and canary versions on ``bots``, and the percentages a
canary may take."""

from __future__ import annotations

import pytest

from agents.bots.canary import check_percent, record_key, tenant_of_key
from agents.bots.errors import BotPublishError
from streams.keys import validate_id


def test_stable_and_canary_keys_name_their_tenant_and_track() -> None:
    for tenant in ("acme", "a.b-c@d_e"):
        assert tenant_of_key(record_key(tenant, canary=False)) == (tenant, False)
        assert tenant_of_key(record_key(tenant, canary=True)) == (tenant, True)
        assert record_key(tenant, canary=True) != record_key(tenant, canary=False)


def test_no_tenant_s_stable_key_is_another_tenant_s_canary_key() -> None:
    canary_key = record_key("acme", canary=True).decode()
    with pytest.raises(ValueError):
        validate_id("tenant id", canary_key)  # so no tenant is named like it


@pytest.mark.parametrize("percent", [1, 50, 99])
def test_a_canary_takes_1_to_99_percent(percent: int) -> None:
    assert check_percent(percent) == percent


@pytest.mark.parametrize("percent, says", [(0, "rollback"), (100, "promote"),
                                           (-1, "1-99"), (101, "1-99")])
def test_other_percentages_are_refused_with_what_to_do(percent: int, says: str) -> None:
    with pytest.raises(BotPublishError, match=says):
        check_percent(percent)
