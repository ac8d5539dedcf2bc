"""``--report DIR``: an HTML page with latency histograms, throughput, latency and
each process's CPU over time.

Plots are PNG files drawn with matplotlib (the optional ``bench`` extra:
``pip install matplotlib``); :func:`check_plotting` fails at start-up, before a
long run, if it is missing.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from benchmarks.e2e import E2EResult

__all__ = ["check_plotting", "write_report"]

_KEYS = (
    "sent", "acked", "replied", "lost", "duplicated", "errors", "throughput_msgs_per_s",
    "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
    "ack_latency_ms_p99", "send_lag_ms_p99",
)  # fmt: skip


def check_plotting() -> None:
    """Raise ImportError with the fix if matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "--report draws its plots with matplotlib, which is not installed: "
            "pip install matplotlib (or the project's `bench` extra)"
        ) from exc


def write_report(directory: Path, results: dict[str, E2EResult], output: dict[str, Any]) -> Path:
    """Write ``index.html`` and its PNGs into ``directory``; return the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    images = [
        _histogram(directory / "latency_histogram.png", results),
        _throughput(directory / "throughput.png", results),
        _latency_over_time(directory / "latency_over_time.png", results),
        _cpu_over_time(directory / "cpu_over_time.png", results),
    ]
    page = directory / "index.html"
    page.write_text(_html(results, output, images), encoding="utf-8")
    (directory / "result.json").write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")
    return page


def _finish(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> str:
    """Label, save and close a figure; the file name for the page."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _histogram(path: Path, results: dict[str, E2EResult]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    values = [v for r in results.values() for v in r.latencies_ms if v > 0]
    if values:
        low, high = max(0.1, min(values)), max(values) * 1.05
        bins = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 10
        for name, result in results.items():
            ax.hist(result.latencies_ms, bins=bins, alpha=0.55, label=name)
        ax.set_xscale("log")
    return _finish(fig, ax, path, "latency, scheduled send → reply (ms, log scale)",
                   "messages", "Latency distribution (steady window)")


def _throughput(path: Path, results: dict[str, E2EResult]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, result in results.items():
        t = result.timeline
        line = ax.step(t["second"], t["replied"], where="post", label=f"{name}: replies/s")[0]
        ax.step(t["second"], t["sent"], where="post", linestyle="--", color=line.get_color(),
                alpha=0.6, label=f"{name}: sent/s")  # fmt: skip
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, path, "seconds since start",
                   "messages per second", "Throughput over time")


def _latency_over_time(path: Path, results: dict[str, E2EResult]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, result in results.items():
        t = result.timeline
        line = ax.plot(t["second"], t["p99_ms"], label=f"{name}: p99")[0]
        ax.plot(t["second"], t["p50_ms"], linestyle="--", color=line.get_color(), alpha=0.7,
                label=f"{name}: p50")  # fmt: skip
    ax.set_yscale("log")
    return _finish(fig, ax, path, "scheduled send time (s since start)",
                   "latency (ms, log scale)", "Latency over time, by second of scheduled send")


def _cell(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "&ndash;"
    return "&ndash;" if value is None else html.escape(str(value))


def _cpu_over_time(path: Path, results: dict[str, E2EResult]) -> str:
    """Cores used by each process, second by second; the Redis nodes as one line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, result in results.items():
        series = dict(result.cpu_timeline)
        seconds = series.pop("second", [])
        redis = [values for proc, values in series.items() if proc.startswith("redis")]
        lines = {proc: values for proc, values in series.items()
                 if not proc.startswith(("redis", "bench"))}
        if redis:
            lines[f"redis ({len(redis)} nodes)"] = [sum(v) for v in zip(*redis, strict=True)]
        for proc, values in lines.items():
            ax.plot(seconds, values, label=f"{name}: {proc}")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, path, "seconds since the steady window began",
                   "CPU (cores)", "CPU of each process over time")


def _halves(value: list[float] | None) -> str:
    return "&ndash;" if not value else " / ".join(_cell(v) for v in value)


def _html(results: dict[str, E2EResult], output: dict[str, Any], images: list[str]) -> str:
    names = list(results)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><td>{key}</td>"
        + "".join(f"<td>{_cell(results[n].summary.get(key))}</td>" for n in names)
        + "</tr>"
        for key in _KEYS
    )
    ratios = "".join(
        f"<li>{key}: <b>{_cell(value)}</b></li>"
        for key, value in output.items() if key.startswith("ratio_")
    )  # fmt: skip
    procs = ""
    for name in names:
        body = "".join(
            f"<tr><td>{html.escape(p)}</td><td>{_cell(v.get('cpu_s'))}</td>"
            f"<td>{_cell(v.get('cpu_util'))}</td><td>{_halves(v.get('cpu_util_halves'))}</td>"
            f"<td>{_cell(v.get('rss_peak_mb'))}</td></tr>"
            for p, v in results[name].summary.get("processes", {}).items()
        )
        machine = results[name].summary.get("machine", {})
        procs += (
            f"<h3>{html.escape(name)}</h3><table><tr><th>process</th><th>CPU s</th>"
            f"<th>CPU (cores)</th><th>first half / second half</th><th>peak RSS MB</th></tr>"
            f"{body}</table>"
            f"<p>machine: {html.escape(json.dumps(machine))}</p>"
        )
    imgs = "".join(f'<p><img src="{html.escape(i)}" alt="{html.escape(i)}"></p>' for i in images)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Parley benchmark</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body>
<h1>Parley end-to-end benchmark</h1>
<table><tr><th></th>{head}</tr>{rows}</table>
<ul>{ratios}</ul>
{imgs}
<h2>Processes (steady window)</h2>{procs}
<h2>Raw result</h2><pre>{html.escape(json.dumps(output, indent=2))}</pre>
</body></html>
"""
