"""Component benchmark of a model folder (wired into ``parley bench nlu``).

Pinned to one thread: onnxruntime ``intra_op_num_threads=1`` and the
tokenizer's Rust thread pool disabled, so the figures are per core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kernel.stats import percentile

__all__ = ["BATCH_SIZE", "run_nlu_bench"]

BATCH_SIZE = 256


def run_nlu_bench(model_dir: Path, texts: list[str], seconds: float) -> dict[str, Any]:
    """Single-message latency (p50/p99 ms) and batched throughput (msgs/s, batch 256).

    Spends about ``seconds / 2`` on each measurement (after a short warm-up).
    """
    if not texts:
        raise ValueError("run_nlu_bench needs at least one text")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    # Imported here, not at the top: tokenizers reads these two variables when it loads.
    from agents.nlu.model import NLUModel

    model = NLUModel.load(Path(model_dir), threads=1)
    half = max(seconds / 2.0, 0.05)
    for text in texts[:50]:
        model.understand(text)

    latencies: list[float] = []
    deadline = time.perf_counter() + half
    i = 0
    while time.perf_counter() < deadline or len(latencies) < 10:
        text = texts[i % len(texts)]
        start = time.perf_counter()
        model.understand(text)
        latencies.append((time.perf_counter() - start) * 1000.0)
        i += 1
    latencies.sort()

    batches = [
        [texts[(j + k) % len(texts)] for k in range(BATCH_SIZE)]
        for j in range(0, max(len(texts), BATCH_SIZE), BATCH_SIZE)
    ]
    model.understand_batch(batches[0])
    n_msgs = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + half
    j = 0
    while time.perf_counter() < deadline or n_msgs == 0:
        model.understand_batch(batches[j % len(batches)])
        n_msgs += BATCH_SIZE
        j += 1
    elapsed = time.perf_counter() - start
    cpu = max(time.process_time() - cpu_start, 1e-9)
    return {
        "model_version": model.version,
        "single_n": len(latencies),
        "single_p50_ms": round(percentile(latencies, 50), 4),
        "single_p99_ms": round(percentile(latencies, 99), 4),
        "batch_size": BATCH_SIZE,
        "batch_msgs": n_msgs,
        "batch_msgs_per_s": round(n_msgs / elapsed, 1),
        # CPU time, not wall time: what one core does when not shared
        "batch_msgs_per_cpu_s": round(n_msgs / cpu, 1),
        "threads": 1,
    }
