"""The keys of a tenant's stable and canary versions on ``bots``, and the percentages a
canary may take."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agents.bots.bundle import bundle_from_folders, check_record
from agents.bots.canary import check_percent, record_key, tenant_of_key
from agents.bots.errors import BotPublishError, BundleError
from streams.keys import validate_id
from tests.unit.bots.test_bundle import make_bot


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


def test_a_version_carries_its_percentage_and_a_record_with_a_bad_one_is_refused(
        tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path / "acme", "hello")
    bundle = replace(bundle_from_folders("acme", bot, model), canary_percent=20)
    assert check_record(bundle.to_record()).canary_percent == 20
    with pytest.raises(BundleError, match="canary_percent 150"):
        check_record({**bundle.to_record(), "canary_percent": 150})
