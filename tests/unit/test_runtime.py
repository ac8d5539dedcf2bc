"""Timing the garbage collector's pauses (parley.runtime)."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from parley.runtime import observe_gc_pauses


def _full_collections() -> float:
    return REGISTRY.get_sample_value("parley_gc_pause_seconds_count", {"generation": "2"}) or 0.0


def test_every_collection_is_timed_once() -> None:
    observe_gc_pauses()
    observe_gc_pauses()  # a second call must not time collections twice
    before = _full_collections()
    gc.collect()
    assert _full_collections() == before + 1
    paused = REGISTRY.get_sample_value("parley_gc_pause_seconds_sum", {"generation": "2"})
    assert paused is not None and paused > 0
