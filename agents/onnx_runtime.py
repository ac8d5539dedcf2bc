"""ONNX Runtime sessions as the agents run them: CPU only, a fixed number of threads."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

__all__ = ["cpu_session"]


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    """A session on ``threads`` intra-op threads, operators run one after another.

    Agents run many small graphs back to back; threads beyond one per core only
    contend with the event loop. Warnings are kept out of the service's logs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
