"""``parley bench``: end-to-end, connections and component benchmarks.

=============  ==========================================================
e2e            scripted conversations through a stack (and/or the inline baseline)
connections    many open sessions on one gateway, a hundred of them busy
fairness       a user's reply latency unloaded and while another user floods (rate limits)
worker         the stream workers alone, fed a backlog: their capacity and CPU per message
nlu            the NLU model alone (benchmarks/nlu.py)
kb             knowledge retrieval alone (benchmarks/kb.py)
broker         the broker's CPU for one produce-and-consume hop, by partition count
instructions   instructions per message of the work itself, under valgrind; --check
               fails on a regression against a baseline
=============  ==========================================================

Each prints one JSON object with ``--json``; see docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import click

from agents.encoders.embedder import EMBEDDER_KINDS
from benchmarks import deploy
from benchmarks.broker import run_broker_bench
from benchmarks.components import kb_bench, nlu_bench
from benchmarks.connections import ConnectionsOptions, run_connections
from benchmarks.deploy import InfraMode, resolve_model_dir
from benchmarks.e2e import E2EOptions, E2EResult, run_load
from benchmarks.e2e import compare as compare_deployments
from benchmarks.fairness import FairnessOptions, run_fairness
from benchmarks.instructions import DEFAULT_MESSAGES as _DEFAULT_MESSAGES
from benchmarks.instructions import WORKLOADS as _WORKLOADS  # (imports the stdlib only)
from benchmarks.instructions import compare as compare_to_baseline
from benchmarks.instructions import environment_changes, load_baseline, run_instructions
from benchmarks.kb import build_synthetic_index
from benchmarks.profile import check_profiler
from benchmarks.report import check_plotting, write_report
from benchmarks.script import load_script
from benchmarks.workers import WorkerBenchOptions, run_worker_bench
from kernel.errors import ParleyError
from kernel.logs import configure_logging
from kernel.settings import Settings

__all__ = ["bench"]

_DIR = click.Path(path_type=Path, file_okay=False)
_EXISTING_DIR = click.Path(path_type=Path, exists=True, file_okay=False)
_EXISTING_FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


@click.group()
def bench() -> None:
    """Benchmarks: end to end, connections, NLU, knowledge retrieval."""
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the stack the bench started is
    # stopped: its processes run in their own sessions and would otherwise outlive it.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _errors_as_click() -> Iterator[None]:
    try:
        yield
    except (ParleyError, ValueError, ImportError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo("\n".join(lines))


def _stack_options(f: Any) -> Any:
    """The options of every command that starts its own stack (or uses a running one)."""
    options = [
        click.option("--infra", type=click.Choice(["own", "running"]), default="own",
                     show_default=True,
                     help="own: start a broker and Redis Cluster on free ports for this run; "
                     "running: use PARLEY_KAFKA_BOOTSTRAP / PARLEY_REDIS_NODES."),
        click.option("--model-dir", type=_EXISTING_DIR,
                     help="NLU model (default: PARLEY_NLU_MODEL or the cached demo model)."),
        click.option("--data-dir", "data_parent", type=_DIR,
                     help="Where each run's fresh data dir is made (default: system temp)."),
        click.option("--keep-data", is_flag=True, help="Keep the run's data dir and logs."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _deployment_options(f: Any) -> Any:
    """The stack options, plus a running gateway's URL and the load generator's processes."""
    f = click.option("--clients-procs", default=1, show_default=True,
                     help="Load generator processes.")(f)
    f = _stack_options(f)
    return click.option("--url", help="Load a running gateway (ws://host:port/ws) instead of "
                        "starting a stack.")(f)


@bench.command()
@click.option(
    "--conversations",
    default=200,
    show_default=True,
    help="Concurrent conversations (one WebSocket session each).",
)
@click.option(
    "--rate",
    default=200.0,
    show_default=True,
    help="Messages per second offered by all conversations together (open loop).",
)
@click.option("--duration", default=20.0, show_default=True, help="Seconds of load.")
@click.option(
    "--warmup",
    type=float,
    help="Seconds excluded from the figures (default: 10% of the duration, 1-5 s).",
)
@click.option(
    "--drain-timeout",
    default=10.0,
    show_default=True,
    help="Seconds to wait for outstanding replies; later ones count as lost.",
)
@click.option("--gateways", default=1, show_default=True, help="Gateway processes.")
@click.option("--workers", default=1, show_default=True, help="Stream worker processes.")
@click.option(
    "--partitions",
    type=int,
    help="Partitions of the chat topics (default: PARLEY_CHAT_PARTITIONS).",
)
@click.option(
    "--baseline",
    type=click.Choice(["none", "inline", "both"]),
    default="none",
    show_default=True,
    help="inline: only the single-process baseline; both: the "
    "pipeline, then the baseline, with ratios.",
)
@click.option(
    "--script",
    "script_file",
    type=_EXISTING_FILE,
    help="NLU examples (JSON lines with text and intent) to draw the texts from.",
)
@click.option("--report", "report_dir", type=_DIR, help="Write an HTML report with plots here.")
@click.option(
    "--profile",
    "profile_dir",
    type=_DIR,
    help="Sample the gateway, worker and inline processes with py-spy during the steady "
    "window; write their stacks here.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit with 1 if a message was lost, duplicated or never acknowledged.",
)
@_deployment_options
def e2e(
    conversations: int, rate: float, duration: float, warmup: float | None,
    drain_timeout: float, gateways: int, workers: int, partitions: int | None, baseline: str,
    script_file: Path | None, report_dir: Path | None, profile_dir: Path | None, check: bool,
    url: str | None,
    infra: str, model_dir: Path | None, data_parent: Path | None, keep_data: bool,
    clients_procs: int, as_json: bool,
) -> None:  # fmt: skip
    """Scripted conversations from real WebSocket clients, open loop, through a stack."""
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        if report_dir is not None:
            check_plotting()
        if profile_dir is not None:
            check_profiler()
        options = E2EOptions(
            conversations=conversations, rate=rate, duration=duration, warmup=warmup,
            drain_timeout=drain_timeout, clients_procs=clients_procs,
            script=load_script(script_file),
        )  # fmt: skip
        results: dict[str, E2EResult] = {}
        if baseline in ("none", "both"):
            if url:
                target = deploy.external_deployment(url)
            else:
                target = deploy.pipeline_deployment(
                    gateways=gateways, workers=workers, infra=cast(deploy.InfraMode, infra),
                    model_dir=model_dir, data_parent=data_parent, partitions=partitions,
                    keep_data=keep_data,
                )  # fmt: skip
            with target as deployment:
                results["pipeline"] = run_load(
                    deployment, options, profile_dir=profile_dir and profile_dir / "pipeline"
                )
        if baseline in ("inline", "both"):
            with deploy.inline_deployment(
                model_dir=model_dir, data_parent=data_parent, keep_data=keep_data
            ) as deployment:
                results["inline"] = run_load(
                    deployment, options, profile_dir=profile_dir and profile_dir / "inline"
                )
    if "pipeline" in results and "inline" in results:
        output = compare_deployments(results["pipeline"].summary, results["inline"].summary)
    else:
        output = next(iter(results.values())).summary
    if report_dir is not None:
        page = write_report(report_dir, results, output)
        click.echo(f"report: {page}", err=True)
    lines = [_e2e_line(name, r.summary) for name, r in results.items()]
    lines += [_stages_line(r.summary["worker_stages"]) for r in results.values()
              if r.summary.get("worker_stages")]
    lines += [f"{k}: {v}" for k, v in output.items() if k.startswith("ratio_")]
    _emit(output, as_json, lines)
    if check and any(_incomplete(r.summary) for r in results.values()):
        raise SystemExit(1)


def _stages_line(stages: dict[str, dict[str, Any]]) -> str:
    return "  worker stages: " + "; ".join(
        f"{agent} takes events {st['event_age_ms_mean']} ms old, batches of "
        f"{st['events_per_batch']} in {st['batch_ms_mean']} ms"
        for agent, st in stages.items()
    )


def _incomplete(summary: dict[str, Any]) -> bool:
    return bool(summary["lost"] or summary["duplicated"] or summary["unacked"])


def _e2e_line(name: str, s: dict[str, Any]) -> str:
    return (
        f"{name}: sent {s['sent']} replied {s['replied']} lost {s['lost']} "
        f"duplicated {s['duplicated']} errors {s['errors']} | "
        f"{s['throughput_msgs_per_s']} msg/s | latency p50 {s['latency_ms_p50']} "
        f"p95 {s['latency_ms_p95']} p99 {s['latency_ms_p99']} max {s['latency_ms_max']} ms"
    )


@bench.command()
@click.option("--clients", default=1000, show_default=True, help="Concurrent sessions.")
@click.option(
    "--active",
    default=100,
    show_default=True,
    help="Sessions that send messages while the rest idle.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    help="Seconds between two messages of one active session.",
)
@click.option(
    "--duration", default=10.0, show_default=True, help="Seconds the active sessions send."
)
@_deployment_options
def connections(
    clients: int, active: int, interval: float, duration: float, url: str | None, infra: str,
    model_dir: Path | None, data_parent: Path | None, keep_data: bool, clients_procs: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Many open sessions on ONE gateway: connect rate, RSS per session, active p99."""
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        options = ConnectionsOptions(
            clients=clients, active=active, interval=interval, duration=duration,
            clients_procs=clients_procs,
        )  # fmt: skip
        if url:
            target = deploy.external_deployment(url)
        else:
            target = deploy.pipeline_deployment(
                gateways=1, workers=1, infra=cast(deploy.InfraMode, infra),
                model_dir=model_dir, data_parent=data_parent, keep_data=keep_data,
            )  # fmt: skip
        with target as deployment:
            s = run_connections(deployment, options).summary
    _emit(s, as_json, [
        f"connected {s['connected']}/{s['clients']} in {s['connect_s']} s "
        f"({s['connect_rate_per_s']}/s), {s['connect_failed']} failed",
        f"gateway RSS {s['gateway_rss_before_mb']} -> {s['gateway_rss_connected_mb']} MB: "
        f"{s['rss_per_connection_kb']} KB per session",
        f"{s['active_sessions']} active: rtt p50 {s['rtt_ms_p50']} p99 {s['rtt_ms_p99']} "
        f"max {s['rtt_ms_max']} ms; lost {s['lost']} duplicated {s['duplicated']}; "
        f"idle still open {s['idle_sessions_open_at_end']}",
    ])  # fmt: skip


@bench.command()
@click.option("--probes", default=4, show_default=True, help="Users whose latency is measured.")
@click.option("--probe-interval", default=1.25, show_default=True,
              help="Seconds between two messages of one probe user (>= 1: the default tier).")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of each phase.")
@click.option("--flood-rate", default=2000.0, show_default=True,
              help="Messages a second the flooding user sends on one connection.")
@click.option("--url", help="Measure a running gateway (ws://host:port/ws) instead of "
              "starting a stack.")
@_stack_options
def fairness(
    probes: int, probe_interval: float, duration: float, flood_rate: float, url: str | None,
    infra: str, model_dir: Path | None, data_parent: Path | None, keep_data: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Probe users' reply latency unloaded, then while one more user floods."""
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        options = FairnessOptions(probes=probes, probe_interval=probe_interval,
                                  duration=duration, flood_rate=flood_rate)
        if url:
            target = deploy.external_deployment(url)
        else:
            target = deploy.pipeline_deployment(
                gateways=1, workers=1, infra=cast(deploy.InfraMode, infra),
                model_dir=model_dir, data_parent=data_parent, keep_data=keep_data,
                rate_limits=True,
            )  # fmt: skip
        with target as deployment:
            s = run_fairness(deployment, options)
    u, f = s["unloaded"], s["flooded"]
    _emit(s, as_json, [
        f"unloaded: p50 {u['p50_ms']} p99 {u['p99_ms']} ms ({u['replies']} replies)",
        f"flooded:  p50 {f['p50_ms']} p99 {f['p99_ms']} ms ({f['replies']} replies); "
        f"flood {f.get('flood')}",
        f"ratio p50 {s['ratio']['p50']} p99 {s['ratio']['p99']}: "
        f"{'within' if s['within_tolerance'] else 'NOT within'} 20 %",
    ])  # fmt: skip


@bench.command()
@click.option("--messages", default=20_000, show_default=True,
              help="ChatMessages produced to chat.inbound in one go.")
@click.option("--conversations", default=400, show_default=True,
              help="Conversations they are spread over.")
@click.option("--workers", default=1, show_default=True, help="Stream worker processes.")
@click.option("--partitions", type=int, help="Partitions per chat topic (default: "
              "PARLEY_CHAT_PARTITIONS).")
@click.option("--drain-timeout", default=120.0, show_default=True,
              help="Seconds to wait for every reply.")
@_stack_options
def worker(messages: int, conversations: int, workers: int, partitions: int | None,
           drain_timeout: float, infra: str, model_dir: Path | None,
           data_parent: Path | None, keep_data: bool, as_json: bool) -> None:
    """The stream workers alone, fed a backlog: their capacity and CPU per message."""
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        result = run_worker_bench(WorkerBenchOptions(
            messages=messages, conversations=conversations, workers=workers,
            partitions=partitions, drain_timeout=drain_timeout, model_dir=model_dir,
            infra=cast(InfraMode, infra), data_parent=data_parent, keep_data=keep_data,
        ))  # fmt: skip
    lines = [f"{result['replied']} of {result['messages']} answered in {result['seconds']} s: "
             f"{result['throughput_msgs_per_s']} msg/s; missing {result['missing']}, "
             f"duplicated {result['duplicated']}"]
    lines += [f"  {name}: {p['cpu_ms_per_msg']} ms CPU/msg, {p['cpu_util']} core"
              for name, p in result["processes"].items()]
    _emit(result, as_json, lines)
    if result["missing"] or result["duplicated"]:
        raise SystemExit(1)


@bench.command()
@click.option(
    "--model-dir",
    type=_EXISTING_DIR,
    help="NLU model (default: PARLEY_NLU_MODEL or the cached demo model).",
)
@click.option(
    "--texts",
    "texts_file",
    type=_EXISTING_FILE,
    help="Texts to classify: JSON lines with `text`, or one per line "
    "(default: the bench conversations' texts).",
)
@click.option("--seconds", default=5.0, show_default=True, help="How long to measure.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def nlu(model_dir: Path | None, texts_file: Path | None, seconds: float, as_json: bool) -> None:
    """The NLU model on its own (benchmarks/nlu.py)."""
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        result = nlu_bench(model_dir, texts_file, seconds)
    _emit(result, as_json, [f"{k}: {v}" for k, v in result.items()])


@bench.command()
@click.option(
    "--index-dir",
    type=_EXISTING_DIR,
    help="Knowledge index folder (default: a cached synthetic index, see --chunks).",
)
@click.option(
    "--chunks",
    default=10_000,
    show_default=True,
    help="Passages of the synthetic index used without --index-dir.",
)
@click.option(
    "--queries",
    "queries_file",
    type=_EXISTING_FILE,
    help="Queries: JSON lines with `text`, or one per line (default: a built-in set).",
)
@click.option("--seconds", default=5.0, show_default=True, help="How long to measure.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def kb(index_dir: Path | None, chunks: int, queries_file: Path | None, seconds: float,
       as_json: bool) -> None:  # fmt: skip
    """Knowledge retrieval on its own (benchmarks/kb.py)."""
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        result = kb_bench(index_dir, queries_file, seconds, chunks)
    _emit(result, as_json, [f"{k}: {v}" for k, v in result.items()])


@bench.command("kb-synth")
@click.option("--index", "index_dir", type=_DIR, required=True)
@click.option("--chunks", type=int, default=10_000, show_default=True)
@click.option("--embedder", type=click.Choice(EMBEDDER_KINDS), default="auto",
              show_default=True)
@click.option("--model-vectors/--random-vectors", default=False, show_default=True,
              help="Embed every passage with the model (slow) or use random unit vectors "
                   "(same search cost).")
def kb_synth(index_dir: Path, chunks: int, embedder: str, model_vectors: bool) -> None:
    """A synthetic index for the latency benchmark (parley bench kb --index-dir ...)."""
    with _errors_as_click():
        result = build_synthetic_index(index_dir, chunks=chunks, embedder=embedder,
                                       model_vectors=model_vectors)
    click.echo(json.dumps(result))


@bench.command()
@click.option("--partitions", default="1,2,4,12", show_default=True,
              help="Comma-separated partition counts to measure.")
@click.option("--stored", default="0", show_default=True,
              help="Comma-separated counts of one-record batches already stored in each "
                   "partition before a hop is measured (what a long-running broker holds).")
@click.option("--rate", default=2000.0, show_default=True, help="Messages per second produced.")
@click.option("--seconds", default=5.0, show_default=True, help="How long to measure each phase.")
@click.option("--linger-ms", default=2.0, show_default=True, help="The producer's linger.ms.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def broker(partitions: str, stored: str, rate: float, seconds: float, linger_ms: float,
           as_json: bool) -> None:
    """The broker's CPU for one hop (produce + consume), by partition count and by what
    each partition already stores (own Kafka node)."""
    counts = _int_list(partitions, "--partitions", minimum=1)
    fills = _int_list(stored, "--stored", minimum=0)
    settings = Settings.from_env()
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        result = run_broker_bench(counts, rate, seconds, settings.fetch_max_wait_ms, linger_ms,
                                  fills)
    _emit(result, as_json, [
        f"{r['partitions']:>3} partitions, {r['stored_batches_per_partition']:>6} batches "
        f"stored in each: idle {r['idle_cpu_util']:.3f} core; "
        f"at {rate:g} msg/s {r['cpu_util']:.3f} core, {r['cpu_us_per_msg']} us/msg"
        for r in result["runs"]
    ])


@bench.command()
@click.option("--workloads", default=",".join(_WORKLOADS), show_default=True,
              help="Comma-separated workloads to count.")
@click.option("--messages", type=click.IntRange(min=1), default=_DEFAULT_MESSAGES,
              show_default=True, help="Messages a round.")
@click.option("--model-dir", type=_EXISTING_DIR,
              help="NLU model (default: PARLEY_NLU_MODEL or the cached demo model).")
@click.option("--check", "baseline_file", type=_EXISTING_FILE,
              help="Compare with this baseline; exit 1 when a workload costs more than "
                   "--tolerance above it.")
@click.option("--tolerance", default=0.03, show_default=True, type=click.FloatRange(min=0),
              help="The rise --check allows, as a fraction.")
@click.option("--write", "write_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Store this run as a baseline.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def instructions(workloads: str, messages: int, model_dir: Path | None,
                 baseline_file: Path | None, tolerance: float, write_file: Path | None,
                 as_json: bool) -> None:
    """Instructions per message of the work itself (NLU, Avro, frames, the dialogue
    policy), counted under valgrind: the same whatever the machine's load."""
    names = [w.strip() for w in workloads.split(",") if w.strip()]
    unknown = sorted(set(names) - set(_WORKLOADS))
    if unknown or not names:
        raise click.BadParameter(f"choose from {', '.join(_WORKLOADS)}", param_hint="--workloads")
    configure_logging("bench", "WARNING", as_json=False)
    with _errors_as_click():
        baseline = load_baseline(baseline_file) if baseline_file else None
        result = run_instructions(names, messages, resolve_model_dir(model_dir))
    lines = [f"{name:<11} {c['instructions_per_message']:>12,} instructions/msg "
             f"({c['messages']} messages a round)" for name, c in result["workloads"].items()]
    regressed = False
    if baseline is not None:
        verdicts = compare_to_baseline(result, baseline, tolerance)
        result["check"] = {
            "baseline": str(baseline_file), "tolerance": tolerance,
            "verdicts": [vars(v) for v in verdicts],
            "environment_changes": environment_changes(result, baseline),
        }
        regressed = any(v.regressed for v in verdicts)
        lines = [f"against {baseline_file} (a rise over {tolerance:.0%} fails):",
                 *(v.line() for v in verdicts)]
        lines += [f"  environment changed, {c}" for c in result["check"]["environment_changes"]]
    if write_file is not None:
        write_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        lines.append(f"baseline written to {write_file}")
    _emit(result, as_json, lines)
    if regressed:
        raise SystemExit(1)


def _int_list(text: str, option: str, *, minimum: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of integers: {text!r}", param_hint=option) from exc
    if not values or min(values) < minimum:
        raise click.BadParameter(f"give at least one count, each >= {minimum}",
                                 param_hint=option)
    return values
