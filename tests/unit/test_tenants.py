"""Tenant configuration, rollout buckets and feature flags (gateway/tenants.py)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from gateway.tenants import (
    Branding,
    TenantConfig,
    TenantError,
    flag_enabled,
    rollout_bucket,
    tenant_config,
)
from kernel.rollout import in_rollout
from kernel.rollout import rollout_bucket as kernel_rollout_bucket


def test_a_configuration_survives_its_json_form() -> None:
    config = tenant_config(
        "acme", tiers=("authenticated", "premium"), origins=("https://shop.example/",),
        jwks_url="https://idp.example/jwks", bot="support", retention_s=3600,
        branding=Branding("Acme", "#ff0000", "Hi!", ("Track my order", "Refunds")),
        flags={"new-model": 25},
    )  # fmt: skip
    again = TenantConfig.from_json(config.to_json())
    assert again == config
    assert again.allowed_origins == ("https://shop.example",)
    assert again.jwt.algorithms == ("HS256", "RS256")
    assert again.branding.to_frame()["suggestions"] == ["Track my order", "Refunds"]


def test_fields_written_by_a_newer_version_are_ignored() -> None:
    config = tenant_config("acme", branding=Branding("Acme"))
    stored = json.loads(config.to_json())
    stored["future_setting"] = 1
    stored["jwt"]["future_jwt_setting"] = "x"
    stored["branding"]["logo"] = "https://acme.example/logo.png"
    assert TenantConfig.from_json(json.dumps(stored)) == config


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tiers": ("gold",)}, "unknown tier"),
    ({"tiers": ("default",), "default_tier": "premium"}, "must be one of the allowed"),
    ({"algorithms": ("none",)}, "not allowed"),
    ({"algorithms": ("RS256",)}, "JWKS URL"),
    ({"secret": "short"}, "at least 32 bytes"),
    ({"flags": {"x": 101}}, "percentage"),
    ({"retention_s": -1}, "retention"),
    ({"issuer": ""}, "issuer"),
    ({"rates": {"gold": "60:10"}}, "rates are set per tier"),
    ({"rates": {"premium": "fast"}}, "rate:burst|messages a minute"),
    ({"rates": {"default": "off"}}, "premium|a rate is written"),
])  # fmt: skip
def test_configurations_that_cannot_work_are_refused(kwargs: dict[str, object],
                                                      message: str) -> None:
    with pytest.raises(TenantError, match=message):
        tenant_config("acme", **kwargs)  # type: ignore[arg-type]


def test_a_tenants_own_rates_travel_with_its_configuration() -> None:
    config = tenant_config("acme", rates={"premium": "2000:200", "tenant": "off"})
    assert TenantConfig.from_json(config.to_json()).rates == {"premium": "2000:200",
                                                              "tenant": "off"}


def test_a_tenant_id_must_be_usable_in_keys() -> None:
    with pytest.raises(ValueError, match="tenant id"):
        tenant_config("a b")


def test_a_users_bucket_is_stable_and_depends_on_tenant_and_user() -> None:
    assert rollout_bucket("acme", "ann") == rollout_bucket("acme", "ann")
    buckets = {rollout_bucket("acme", f"u{i}") for i in range(50)}
    assert len(buckets) > 25
    assert [rollout_bucket("acme", f"u{i}") for i in range(50)] != \
        [rollout_bucket("globex", f"u{i}") for i in range(50)]
    assert all(0 <= b <= 99 for b in buckets)


def test_gateways_and_workers_share_one_bucket_function() -> None:
    # The workers route canary bot versions with kernel.rollout (agents/bots/registry.py):
    # a user in a flag at 10 % is in a canary at 10 %.
    assert rollout_bucket is kernel_rollout_bucket
    users = [f"u{i}" for i in range(300)]
    config = tenant_config("acme", flags={"canary": 10})
    assert {u for u in users if flag_enabled(config, "canary", u)} == \
        {u for u in users if in_rollout("acme", u, 10)}


def test_buckets_spread_evenly() -> None:
    counts = Counter(rollout_bucket("acme", f"user-{i}") // 10 for i in range(20_000))
    assert set(counts) == set(range(10))
    assert all(1_700 < n < 2_300 for n in counts.values()), counts


def test_a_rollout_grows_without_dropping_anyone() -> None:
    users = [f"user-{i}" for i in range(2_000)]

    def enabled(percent: int) -> set[str]:
        config = tenant_config("acme", flags={"canary": percent})
        return {u for u in users if flag_enabled(config, "canary", u)}

    ten, fifty, everyone = enabled(10), enabled(50), enabled(100)
    assert ten < fifty < everyone == set(users)
    assert 120 < len(ten) < 280 and 850 < len(fifty) < 1150
    assert enabled(0) == set()
    assert not flag_enabled(tenant_config("acme"), "unknown-flag", "user-1")
