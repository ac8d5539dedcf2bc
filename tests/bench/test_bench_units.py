"""The benchmark's arithmetic, without sockets: schedule, counting, percentiles."""

from __future__ import annotations

import importlib
import json
import math
import sys
from array import array
from pathlib import Path

import pytest

from benchmarks import instructions
from benchmarks.e2e import E2EOptions, compare, cpu_per_message, summarize
from benchmarks.loadgen import ConnectReport, LoadResult, split_plan
from benchmarks.profile import check_profiler, summarize_collapsed
from benchmarks.script import ConversationScript, load_script
from benchmarks.stages import StageTotals
from benchmarks.stats import latency_summary, per_second

NAN = math.nan
MODULES = ["cli", "components", "connections", "deploy", "e2e", "inline", "instructions",
           "loadgen", "procstats", "profile", "report", "script", "stages", "stats", "workers"]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__all__, name
    for symbol in module.__all__:
        assert hasattr(module, symbol), f"benchmarks.{name}.{symbol}"


def test_latency_summary_reports_none_when_empty() -> None:
    assert latency_summary([])["latency_ms_p99"] is None
    assert latency_summary([1.0, 2.0], "x")["x_max"] == 2.0


def test_per_second_buckets() -> None:
    assert per_second([0.1, 0.9, 1.5, 2.999, 7.0], 3) == [2, 1, 1]


def test_schedule_spreads_conversations_evenly() -> None:
    plans = split_plan(2, 4, idle=3, urls=("ws://a/ws", "ws://b/ws"), run_id="r", rate=8.0,
                       duration=1.0, drain_timeout=1, script=load_script())
    assert [p.conversations for p in plans] == [(0, 2), (1, 3)]
    assert [p.idle for p in plans] == [2, 1] and [p.idle_offset for p in plans] == [0, 2]
    plan = plans[0]
    # 8 msg/s over 4 conversations: each sends every 0.5 s, offset by its index / rate.
    assert [plan.send_time(2, j) for j in range(2)] == [0.25, 0.75]
    assert sum(plan.messages_of(c) for c in range(4)) == 8
    assert plan.session_url(1).startswith("ws://b/ws?conversation=r-c1&user=u-r-c1")
    assert "conversation=r-i5" in plan.session_url(5, idle=True)


def test_script_cycles_through_its_turns() -> None:
    script = ConversationScript((("hi",), ("q1", "q2"), ("thanks",)))
    assert [script.text(0, m) for m in range(4)] == ["hi", "q1", "thanks", "hi"]
    with pytest.raises(ValueError):
        ConversationScript(((),))


def test_script_from_examples(tmp_path: Path) -> None:
    examples = tmp_path / "nlu.jsonl"
    lines = [{"text": "hello", "intent": "greet"}, {"text": "my card?", "intent": "card_arrival"},
             {"text": "bye", "intent": "goodbye"}, {"text": "blah", "intent": "oos"}]
    examples.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    script = load_script(examples)
    assert script.turns[0] == ("hello",) and script.turns[1] == ("my card?",)
    assert script.turns[3] == ("bye",) and "blah" not in script.all_texts()


def _result(rows: list[tuple[float, float, float, float, float]], duplicated: int = 0
            ) -> LoadResult:
    columns = list(zip(*rows, strict=True))
    return LoadResult(
        process=0, conversations=[0], message_counts=[len(rows)],
        scheduled=array("d", columns[0]), sent=array("d", columns[1]),
        acked=array("d", columns[2]), replied=array("d", columns[3]),
        failed=array("d", columns[4]), duplicated=duplicated, errors={"frame:x": 1},
    )


def test_summary_counts_lost_unacked_and_latency_from_the_schedule() -> None:
    rows = [
        (1.0, 1.001, 1.010, 1.050, NAN),  # answered: 50 ms from its scheduled time
        (1.5, 1.600, 1.610, 1.700, NAN),  # sent late: 200 ms counts, not 100 ms
        (2.0, 2.001, 2.010, NAN, NAN),    # acked, never answered: lost
        (2.5, 2.501, NAN, NAN, NAN),      # never acked: unacked
        (3.0, 3.001, NAN, NAN, 3.01),     # refused with an error frame
        (3.5, NAN, NAN, NAN, NAN),        # never sent (connection gone)
    ]  # fmt: skip
    options = E2EOptions(conversations=1, rate=2, duration=4, warmup=0.5,
                         script=load_script())
    report = ConnectReport(0, 1, 1, 0, 0.5, {})
    s = summarize([_result(rows, duplicated=1)], [report], options).summary
    assert (s["sent"], s["acked"], s["replied"]) == (5, 3, 2)
    assert (s["lost"], s["unacked"], s["refused"], s["duplicated"]) == (1, 1, 1, 1)
    assert s["latency_ms_p50"] == 50.0 and s["latency_ms_max"] == 200.0
    assert s["errors"] == 1 and s["errors_by_kind"] == {"frame:x": 1}
    assert s["throughput_msgs_per_s"] == round(2 / 3.5, 1)


def test_cpu_per_message_and_ratios() -> None:
    processes = {"gateway-0": {"cpu_util": 0.5}, "worker-0": {"cpu_util": 1.0},
                 "loadgen-0": {"cpu_util": 0.5}}
    out = cpu_per_message(processes, {"throughput_msgs_per_s": 1000}, {"cores": 2})
    assert out == {"cpu_ms_per_msg": 1.5, "capacity_estimate_msgs_per_s": 1333}
    assert processes["loadgen-0"]["cpu_ms_per_msg"] == 0.5
    both = compare({"throughput_msgs_per_s": 500, "latency_ms_p99": 40},
                   {"throughput_msgs_per_s": 1000, "latency_ms_p99": 10})
    assert both["ratio_throughput"] == 0.5 and both["ratio_latency_p99"] == 4.0


def test_collapsed_stacks_summary(tmp_path: Path) -> None:
    path = tmp_path / "w.collapsed.txt"
    path.write_text("main;loop;decode 3\nmain;loop 1\nmain;send 6\n")
    text = summarize_collapsed(path)
    assert "10 samples" in text
    assert " 60.0%  send" in text and "100.0%  main" in text


def test_py_spy_is_found_beside_the_interpreter_without_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``.venv/bin/parley bench e2e --profile`` works with the venv off ``PATH``."""
    monkeypatch.setenv("PATH", "")
    assert Path(check_profiler()) == Path(sys.executable).parent / "py-spy"


def test_full_collections_of_the_active_phase_are_those_after_connecting() -> None:
    from benchmarks.connections import _FullCollections

    buckets = (0.01, 0.05, 0.1, 0.5, math.inf)
    # Connecting: three collections, the longest under 0.5 s. Then one more, under 0.05 s.
    connected = _FullCollections(3, 0.9, tuple(zip(buckets, (0, 0, 1, 3, 3), strict=True)))
    end = _FullCollections(4, 0.93, tuple(zip(buckets, (0, 1, 2, 4, 4), strict=True)))
    assert end.since(None) == {"count": 4, "total_s": 0.93, "longest_at_most_s": 0.5}
    assert end.since(connected) == {"count": 1, "total_s": 0.03, "longest_at_most_s": 0.05}
    assert connected.since(connected) == {"count": 0, "total_s": 0.0, "longest_at_most_s": 0.0}


def test_the_load_process_times_its_full_collections_while_the_load_runs() -> None:
    import gc

    from benchmarks.loadgen import _full_collections_timed

    pauses: list[float] = []
    with _full_collections_timed(pauses):
        gc.collect(1)
        assert pauses == []  # young collections are not what it reports
        gc.collect()
        assert len(pauses) == 1 and 0 <= pauses[0] < 5
    gc.collect()
    assert len(pauses) == 1, "timed only while the load ran"


def _worker_page(agent: str, batches: int, events: int, age_s: float, batch_s: float) -> str:
    """A worker's /metrics text with the three agent histograms (sums and counts)."""
    lines = []
    for family, total in (("parley_agent_event_age_seconds", age_s),
                          ("parley_agent_batch_seconds", batch_s),
                          ("parley_agent_batch_size", events)):
        lines += [f"# TYPE {family} histogram",
                  f'{family}_bucket{{agent="{agent}",le="+Inf"}} {batches}',
                  f'{family}_count{{agent="{agent}"}} {batches}',
                  f'{family}_sum{{agent="{agent}"}} {total}']
    lines += ["# TYPE parley_agent_events_total counter",
              f'parley_agent_events_total{{agent="{agent}"}} {events}']
    return "\n".join(lines) + "\n"


def test_worker_stages_are_the_load_s_own_batches_over_every_worker() -> None:
    before = StageTotals.parse([_worker_page("nlu", 10, 10, 0.05, 0.02)])
    after = StageTotals.parse([  # two workers: their batches add up
        _worker_page("nlu", 30, 50, 0.25, 0.1) + _worker_page("dialogue", 4, 8, 0.04, 0.02),
        _worker_page("nlu", 20, 20, 0.2, 0.1),
    ])
    stages = after.since(before)
    # nlu: 40 batches of 60 events since, ages 0.4 s and batches 0.18 s in all
    assert stages["nlu"] == {"batches": 40, "events_per_batch": 1.5,
                             "event_age_ms_mean": 10.0, "batch_ms_mean": 4.5}
    assert stages["dialogue"] == {"batches": 4, "events_per_batch": 2.0,
                                  "event_age_ms_mean": 10.0, "batch_ms_mean": 5.0}
    assert after.since(after) == {}  # no batches since: no stage


def _counts(**per_message: int) -> dict[str, object]:
    return {"environment": {"valgrind": "valgrind-3.19.0", "numpy": "2.1.0"},
            "workloads": {name.replace("_", "-"): {"instructions_per_message": n}
                          for name, n in per_message.items()}}


def test_the_instruction_total_is_the_thread_profile_s_summary() -> None:
    profile = ("# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 8690\n"
               "cmd:  python -m benchmarks.instructions events 1 1024 m\npart: 1\n"
               "thread: 1\n\npositions: line\nevents: Ir\nsummary: 3495166673\n\nfl=(1) ???\n")
    assert instructions.parse_summary(profile) == 3_495_166_673
    with pytest.raises(RuntimeError, match="no instruction total"):
        instructions.parse_summary("# callgrind format\nversion: 1\n")


def test_a_workload_regresses_only_when_it_costs_more_than_the_tolerance_above() -> None:
    baseline = _counts(nlu_batch=400_000, events=700_000, nlu_single=1_000_000)
    now = _counts(nlu_batch=412_000, events=722_000, nlu_single=900_000, extra=5)
    verdicts = {v.workload: v for v in instructions.compare(now, baseline, tolerance=0.03)}
    assert set(verdicts) == {"nlu-batch", "events", "nlu-single"}  # not in the baseline: no verdict
    assert not verdicts["nlu-batch"].regressed  # +3.0 %: at the tolerance
    assert verdicts["events"].regressed and verdicts["events"].change == pytest.approx(0.0314, 1e-2)
    assert not verdicts["nlu-single"].regressed  # cheaper is never a regression
    assert "REGRESSION" in verdicts["events"].line() and "+3.1%" in verdicts["events"].line()


def test_a_check_names_what_changed_in_the_environment() -> None:
    baseline = _counts(events=1)
    now = _counts(events=1)
    now["environment"] = {"valgrind": "valgrind-3.19.0", "numpy": "2.2.0"}
    assert instructions.environment_changes(now, baseline) == ["numpy: 2.1.0 -> 2.2.0"]


def test_a_baseline_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"sent": 3}')
    with pytest.raises(ValueError, match="no workloads"):
        instructions.load_baseline(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        instructions.load_baseline(tmp_path / "missing.json")


def test_the_committed_baseline_counts_every_workload() -> None:
    committed = Path(instructions.__file__).with_name("instructions_baseline.json")
    baseline = instructions.load_baseline(committed)
    assert set(baseline["workloads"]) == set(instructions.WORKLOADS)
    assert all(c["instructions_per_message"] > 0 for c in baseline["workloads"].values())
