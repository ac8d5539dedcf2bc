"""Benchmarks of the whole pipeline and of its parts (``parley bench``).

* :mod:`parley.bench.loadgen` — open-loop WebSocket load generator (processes)
* :mod:`parley.bench.deploy` — what runs under load: a Stack, the inline baseline, a URL
* :mod:`parley.bench.e2e` — the end-to-end benchmark and its figures
* :mod:`parley.bench.connections` — many sessions on one gateway
* :mod:`parley.bench.inline` — the single-process baseline server
* :mod:`parley.bench.components` — NLU and knowledge retrieval on their own
* :mod:`parley.bench.report` — the HTML report
"""

from parley.bench.connections import ConnectionsOptions, run_connections
from parley.bench.deploy import (
    Deployment,
    external_deployment,
    inline_deployment,
    pipeline_deployment,
)
from parley.bench.e2e import E2EOptions, E2EResult, compare, run_load
from parley.bench.script import ConversationScript, load_script

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
