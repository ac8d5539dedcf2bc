"""The garbage collector in long-lived processes (kernel.runtime): its pauses timed, and
young collections rare enough that a message's objects die before one."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from kernel.runtime import YOUNG_COLLECTION_EVERY, collect_young_less_often, observe_gc_pauses


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


def _young_collections_while_allocating(containers: int) -> int:
    before = gc.get_stats()[0]["collections"]
    alive = [{"n": n} for n in range(containers)]  # a burst of messages' dicts, in flight
    del alive
    return gc.get_stats()[0]["collections"] - before


def test_young_collections_wait_for_many_allocations_and_leave_the_others_alone() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, *saved[1:])  # CPython's default
        gc.collect()
        assert _young_collections_while_allocating(20_000) > 0
        collect_young_less_often()
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *saved[1:])
        gc.collect()
        assert _young_collections_while_allocating(20_000) == 0
    finally:
        gc.set_threshold(*saved)
