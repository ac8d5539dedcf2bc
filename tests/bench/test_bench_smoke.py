"""Each ``parley bench`` command, small and fast, through real processes.

Checks that the JSON is complete and that nothing was lost or duplicated, not
the speed. The pipeline runs on the session's embedded broker and Redis Cluster
(``infra`` fixture, ``--infra running``) with its own topic prefix; gateways,
workers and the inline server get free ports from the bench itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from benchmarks.cli import bench
from examples import DEMO
from tests.conftest import InfraAddresses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

E2E_KEYS = {
    "sent", "acked", "replied", "lost", "duplicated", "throughput_msgs_per_s",
    "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
    "ack_latency_ms_p99", "errors", "processes", "cpu_ms_per_msg",
}  # fmt: skip


@pytest.fixture(scope="module")
def bench_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domain's NLU model, trained once for this module."""
    from agents.dialogue.loader import load_bot
    from agents.dialogue.training import ensure_nlu_model

    return Path(ensure_nlu_model(load_bot(DEMO.folder), tmp_path_factory.mktemp("bench-models")))


@pytest.fixture
def run_bench(infra: InfraAddresses, tmp_path: Path) -> Iterator[Any]:
    """Invoke ``parley bench ARGS --json`` against the session's infrastructure."""
    env = {
        "PARLEY_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "PARLEY_REDIS_NODES": infra.redis_nodes,
        "PARLEY_CHAT_PARTITIONS": "4",
        "PARLEY_DATA_DIR": str(tmp_path / "dev"),
        "PARLEY_LOG_LEVEL": "WARNING",
    }

    def run(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(bench, [*args, "--json"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    yield run


def _assert_complete(summary: dict[str, Any], sent: int) -> None:
    missing = E2E_KEYS - summary.keys()
    assert not missing, f"missing keys: {sorted(missing)}"
    assert summary["sent"] == sent
    assert summary["replied"] == summary["acked"] == sent
    assert summary["lost"] == 0 and summary["unacked"] == 0
    assert summary["duplicated"] == 0
    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert summary["latency_ms_p99"] is not None


def test_e2e_pipeline_and_inline_baseline(run_bench: Any, bench_model: Path,
                                          tmp_path: Path) -> None:
    report = tmp_path / "report"
    args = ["e2e", "--conversations", "5", "--rate", "20", "--duration", "3",
            "--drain-timeout", "20", "--infra", "running", "--baseline", "both",
            "--model-dir", str(bench_model), "--data-dir", str(tmp_path / "runs")]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        report = None  # type: ignore[assignment]
    else:
        args += ["--report", str(report)]
    out = run_bench(*args)
    # 5 conversations x 20 msg/s x 3 s: every message of the schedule, in both runs.
    _assert_complete(out["pipeline"], sent=60)
    _assert_complete(out["inline"], sent=60)
    assert out["ratio_throughput"] is not None and out["ratio_latency_p99"] is not None
    procs = out["pipeline"]["processes"]
    assert {"gateway-0", "worker-0", "loadgen-0"} <= procs.keys()
    assert all(p["rss_peak_mb"] > 0 for p in procs.values())
    assert all(len(p["cpu_util_halves"]) == 2 for p in procs.values())  # is the run steady?
    assert "inline" in out["inline"]["processes"]
    assert out["pipeline"]["loadgen_full_gc"]["count"] >= 0  # its own pauses, if any
    stages = out["pipeline"]["worker_stages"]  # read from the worker's /metrics
    # its 60 messages and the knowledge agent's answers
    assert stages["conversation"]["batches"] >= 1
    assert stages["conversation"]["events_per_batch"] >= 1
    assert all(s["event_age_ms_mean"] > 0 and s["batch_ms_mean"] > 0 for s in stages.values())
    assert "worker_stages" not in out["inline"]  # no stream workers there
    if report is not None:
        assert (report / "index.html").is_file() and (report / "throughput.png").is_file()
        assert (report / "cpu_over_time.png").is_file()


def test_connections(run_bench: Any, bench_model: Path, tmp_path: Path) -> None:
    out = run_bench("connections", "--clients", "50", "--active", "10", "--duration", "2",
                    "--infra", "running", "--model-dir", str(bench_model),
                    "--data-dir", str(tmp_path / "runs"))
    assert out["connected"] == 50 and out["connect_failed"] == 0
    assert out["idle_sessions_open_at_end"] == 40
    assert out["rss_per_connection_kb"] is not None and out["connect_rate_per_s"] > 0
    assert out["sent"] == out["replied"] == 20
    assert out["lost"] == 0 and out["duplicated"] == 0 and out["errors"] == 0
    assert out["rtt_ms_p99"] is not None
    full_gc = out["gateway_full_gc"]  # read from the gateway's parley_gc_pause_seconds
    assert full_gc["count"] >= 0 and full_gc["total_s"] >= 0
    active_gc = out["gateway_full_gc_active"]  # those after the sessions connected
    assert 0 <= active_gc["count"] <= full_gc["count"]
    assert out["loadgen_full_gc"]["count"] >= 0


def test_worker(run_bench: Any, bench_model: Path, tmp_path: Path) -> None:
    out = run_bench("worker", "--messages", "200", "--conversations", "20", "--infra",
                    "running", "--model-dir", str(bench_model),
                    "--data-dir", str(tmp_path / "runs"))
    assert out["replied"] == out["messages"] == 200
    assert out["missing"] == 0 and out["duplicated"] == 0
    assert out["throughput_msgs_per_s"] > 0
    assert "gateway-0" not in out["processes"]  # the workers alone
    assert out["processes"]["worker-0"]["cpu_ms_per_msg"] > 0


def test_nlu(run_bench: Any, bench_model: Path) -> None:
    out = run_bench("nlu", "--seconds", "1", "--model-dir", str(bench_model))
    assert out["single_n"] > 0 and 0 < out["single_p50_ms"] <= out["single_p99_ms"]
    assert out["batch_msgs"] > 0 and out["batch_msgs_per_s"] > 0


def test_kb(run_bench: Any, tmp_path: Path) -> None:
    # Without --index-dir: a synthetic index is built once under PARLEY_DATA_DIR/bench.
    out = run_bench("kb", "--seconds", "1", "--chunks", "200")
    assert out["chunks"] == 200 and out["queries"] > 0
    assert out["latency_ms_p99"] > 0
    assert (tmp_path / "dev" / "bench" / "kb-synth-200").is_dir()


def test_broker(run_bench: Any) -> None:
    out = run_bench("broker", "--partitions", "1,3", "--stored", "0,300", "--rate", "200",
                    "--seconds", "1")
    assert [(r["partitions"], r["stored_batches_per_partition"]) for r in out["runs"]] == [
        (1, 0), (1, 300), (3, 0), (3, 300)]
    assert out["broker"].startswith("Apache Kafka 4.")
    for run in out["runs"]:
        # Only what the hop produced is read back: the stored batches lie before it.
        assert run["sent"] >= 150 and run["consumed"] == run["sent"]
        assert run["cpu_util"] > 0 and run["cpu_us_per_msg"] > 0 and run["idle_cpu_util"] >= 0


@pytest.mark.parametrize("args", [["--stored", "0,-1"], ["--stored", "a"], ["--partitions", "0"]])
def test_broker_rejects_a_bad_count(args: list[str]) -> None:
    result = CliRunner().invoke(bench, ["broker", *args])
    assert result.exit_code == 2 and args[0] in result.output


@pytest.mark.timeout(400)  # two processes under valgrind: 80 s here in a slow hour
def test_instructions_check_fails_on_a_regression(bench_model: Path, tmp_path: Path) -> None:
    # A baseline far cheaper than anything real: the check must fail, naming the workload.
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"workloads": {"events": {"instructions_per_message": 1}}}))
    result = CliRunner().invoke(bench, [
        "instructions", "--workloads", "events", "--messages", "32",
        "--model-dir", str(bench_model), "--check", str(baseline), "--json",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    count = out["workloads"]["events"]
    assert count["messages"] == 32 and count["totals"][1] > count["totals"][0]
    assert count["instructions_per_message"] > 1000
    [verdict] = out["check"]["verdicts"]
    assert verdict["workload"] == "events" and verdict["regressed"]


def test_fairness(run_bench: Any, bench_model: Path, tmp_path: Path) -> None:
    out = run_bench("fairness", "--duration", "3", "--probes", "2", "--flood-rate", "200",
                    "--infra", "running", "--model-dir", str(bench_model),
                    "--data-dir", str(tmp_path / "runs"))
    for phase in ("unloaded", "flooded"):  # every probe message answered, none refused
        assert out[phase]["replies"] >= 4 and out[phase]["probe_errors"] == {}
        assert out[phase]["p99_ms"] >= out[phase]["p50_ms"] > 0
    flood = out["flooded"]["flood"]
    # The default tier lets a burst of 10 through, then one a second; every other
    # message of the flood is refused, and every one is answered.
    assert flood["sent"] >= 1000
    assert 10 <= flood["ack"] <= 20 and flood["reply"] == flood["ack"]
    assert flood["rate_limited"] == flood["sent"] - flood["ack"]
    assert set(out["ratio"]) == {"p50", "p99"} and isinstance(out["within_tolerance"], bool)
