"""Benchmarks of the whole pipeline and of its parts (``parley bench``).

* :mod:`benchmarks.loadgen` — open-loop WebSocket load generator (processes)
* :mod:`benchmarks.deploy` — what runs under load: a Stack, the inline baseline, a URL
* :mod:`benchmarks.e2e` — the end-to-end benchmark and its figures
* :mod:`benchmarks.connections` — many sessions on one gateway
* :mod:`benchmarks.inline` — the single-process baseline server
* :mod:`benchmarks.components` — NLU and knowledge retrieval on their own
* :mod:`benchmarks.report` — the HTML report
"""

from benchmarks.connections import ConnectionsOptions, run_connections
from benchmarks.deploy import (
    Deployment,
    external_deployment,
    inline_deployment,
    pipeline_deployment,
)
from benchmarks.e2e import E2EOptions, E2EResult, compare, run_load
from benchmarks.script import ConversationScript, load_script

__all__ = [
    "ConnectionsOptions",
    "ConversationScript",
    "Deployment",
    "E2EOptions",
    "E2EResult",
    "compare",
    "external_deployment",
    "inline_deployment",
    "load_script",
    "pipeline_deployment",
    "run_connections",
    "run_load",
]
