"""The fairness benchmark: does one flooding user slow the others down?

Before per-user rate limits, one user's 3,000 messages in 0.06 s were all accepted and
only the gateway-wide in-flight limit stopped them, by refusing everybody. Now the
flooder's excess is refused at the gateway (``rate_limited``) before it costs a
sequence number, a produce or a worker's time, and the others should not notice.

Two phases of ``duration`` seconds on one deployment with the rate limits on:

* unloaded: ``probes`` users each send a message every ``probe_interval`` seconds
  (within the default tier's one a second) and time each reply;
* flooded: the same, while one more user sends ``flood_rate`` messages a second on
  one connection, reading what comes back, from a process of its own (in the probes'
  event loop its CPU would delay their timing, as it would not for a real flooder).

The figure is each phase's reply-latency p50 and p99 of the probe users, and their
ratio: the issue asks that the flooded ones stay within 20 % of the unloaded ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import uvloop
import websockets
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.deploy import Deployment
from kernel.stats import percentile

__all__ = ["FairnessOptions", "run_fairness"]

#: Seconds the flood runs before the probes start measuring (it ends when they do).
_FLOOD_LEAD_S = 3.0


@dataclass(frozen=True)
class FairnessOptions:
    probes: int = 4
    probe_interval: float = 1.25
    duration: float = 30.0
    flood_rate: float = 2000.0
    tolerance: float = 0.2
    #: A tenant API key (X-Parley-Key): every socket speaks for its own user of that tenant.
    api_key: str = ""

    def __post_init__(self) -> None:
        if self.probes < 1 or self.duration <= 0 or self.flood_rate <= 0:
            raise ValueError("--probes, --duration and --flood-rate must be positive")
        if self.probe_interval < 1.0:
            raise ValueError("--probe-interval below 1 s would make the probes themselves "
                             "exceed the default tier (60 a minute)")


def _url(base: str, user: str) -> str:
    return f"{base}?user={user}&conversation={user}"


def _headers(api_key: str) -> dict[str, str] | None:
    return {"X-Parley-Key": api_key} if api_key else None


async def _probe(url: str, api_key: str, interval: float, until: float, out: list[float],
                 errors: Counter[str]) -> None:
    """Send a message every ``interval`` s until ``until``; time each reply."""
    async with websockets.connect(url, compression=None,
                                  additional_headers=_headers(api_key)) as ws:
        json.loads(await ws.recv())  # welcome
        n = 0
        while time.monotonic() < until:
            began = time.perf_counter()
            msg_id = f"p{n}"
            n += 1
            await ws.send(json.dumps({"type": "message", "text": "hello",
                                      "client_msg_id": msg_id}))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame["type"] == "reply" and frame.get("in_reply_to") == msg_id:
                    out.append((time.perf_counter() - began) * 1000)
                    break
                if frame["type"] == "error":
                    errors[frame["code"]] += 1
                    break
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - began)))


class _FloodAnswers(WSListener):
    """Counts the flooder's answers by type (errors by code), its welcome aside."""

    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts
        self.welcomed = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:  # the gateway's answer to the flooder's
            transport.disconnect()
        if frame.msg_type is not WSMsgType.TEXT:
            return
        answer = orjson.loads(frame.get_payload_as_bytes())
        if not self.welcomed.done():
            self.welcomed.set_result(None)
        else:
            self.counts[answer.get("code", answer["type"])] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError("closed before its welcome frame"))


async def _flood(url: str, api_key: str, rate: float, seconds: float) -> dict[str, int]:
    """Send ``rate`` messages a second on one connection for ``seconds``; count answers.

    A picows client, as the load generator's sessions are (benchmarks/loadgen.py): it
    shares the machine with the probes and the gateway, and the less CPU the flood
    itself takes, the more the figure shows what the gateway does with it."""
    counts: Counter[str] = Counter()
    transport, answers = await ws_connect(lambda: _FloodAnswers(counts), url,
                                          extra_headers=_headers(api_key),
                                          use_aiofastnet=False)  # as the load generator
    assert isinstance(answers, _FloodAnswers)
    await answers.welcomed
    tick, n = 0.01, 0
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        for _ in range(n, int(elapsed * rate)):
            transport.send(WSMsgType.TEXT,
                           b'{"type":"message","text":"flood","client_msg_id":"f%d"}' % n)
            n += 1
        await asyncio.sleep(tick)
    counts["sent"] = n
    await asyncio.sleep(1)  # the last answers
    transport.send_close(WSCloseCode.OK)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await transport.wait_disconnected()
    transport.disconnect()
    return dict(counts)


def _flood_process(url: str, api_key: str, rate: float, seconds: float) -> dict[str, int]:
    """The flooder in a process of its own: its CPU does not delay the probes' timing."""
    return uvloop.run(_flood(url, api_key, rate, seconds))


async def _phase(base: str, options: FairnessOptions, run: str, name: str,
                 flood: bool) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    flooder = None
    if flood:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        flooder = asyncio.get_running_loop().run_in_executor(
            pool, _flood_process, _url(base, f"{run}-flood"), options.api_key,
            options.flood_rate, options.duration + _FLOOD_LEAD_S)
        await asyncio.sleep(_FLOOD_LEAD_S)  # the flood at full rate before measuring
    until = time.monotonic() + options.duration
    await asyncio.gather(*(
        _probe(_url(base, f"{run}-{name}-{i}"), options.api_key, options.probe_interval,
               until, latencies, errors)
        for i in range(options.probes)
    ))  # fmt: skip
    flood_counts = {}
    if flooder is not None:
        flood_counts = await flooder
        pool.shutdown()
    latencies.sort()
    result: dict[str, Any] = {
        "replies": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "probe_errors": dict(errors),
    }
    if flood:
        result["flood"] = flood_counts
    return result


async def _run(base: str, options: FairnessOptions) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    # Warm the pipeline (first produce, model loading) before measuring anything.
    await _phase(base, FairnessOptions(probes=1, duration=3, api_key=options.api_key), run,
                 "warm", flood=False)
    unloaded = await _phase(base, options, run, "unloaded", flood=False)
    flooded = await _phase(base, options, run, "flooded", flood=True)
    ratios = {
        q: round(flooded[f"{q}_ms"] / unloaded[f"{q}_ms"], 3)
        if unloaded[f"{q}_ms"] and flooded[f"{q}_ms"] else None
        for q in ("p50", "p99")
    }
    return {
        "options": {"probes": options.probes, "probe_interval_s": options.probe_interval,
                    "duration_s": options.duration, "flood_rate": options.flood_rate},
        "unloaded": unloaded,
        "flooded": flooded,
        "ratio": ratios,
        "within_tolerance": all(r is not None and r <= 1 + options.tolerance
                                for r in ratios.values()),
    }


def run_fairness(deployment: Deployment, options: FairnessOptions) -> dict[str, Any]:
    """Both phases against the deployment's first gateway; the summary as a dict."""
    return asyncio.run(_run(deployment.ws_urls[0],
                            dataclasses.replace(options, api_key=deployment.api_key)))
