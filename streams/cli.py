"""``parley worker``: a Faust worker with the conversation and knowledge agents."""

from __future__ import annotations

import click

from kernel.logs import configure_logging
from kernel.settings import Settings

__all__ = ["worker"]


@click.command()
@click.option("--web-port", type=int, help="HTTP port for /healthz /readyz /metrics.")
def worker(web_port: int | None) -> None:
    """Run a stream worker in the consumer group (partitions are shared among workers)."""
    import uvloop
    from faust import Worker

    from parley.worker import build_worker

    settings = Settings.from_env()
    if web_port is not None:
        settings = settings.replace(worker_web_port=web_port)
    configure_logging("worker", settings.log_level, settings.log_json)
    ctx = build_worker(settings)
    uvloop.install()
    Worker(ctx.app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()
