"""The gateway's metrics: each Python name says what the exported metric counts."""

from __future__ import annotations

from gateway import metrics


def test_every_constant_is_named_like_the_metric_it_exports() -> None:
    for name in metrics.__all__:
        exported = getattr(metrics, name)._name
        assert name.lower() in exported, f"{name} exports {exported}"


def test_failed_messages_are_counted_by_reason() -> None:
    assert metrics.MESSAGES_FAILED._labelnames == ("reason",)
    assert metrics.REPLIES_INVALID._labelnames == ("reason",)
