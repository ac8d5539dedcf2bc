"""``parley up``: broker, Redis Cluster, a gateway and a worker on this machine.

A gateway or worker that crashes is restarted with backoff while the broker and
Redis stay up; ``parley up`` gives up (stops everything, exits non-zero) only on
a crash loop (parley/supervisor.py).
"""

from __future__ import annotations

import functools
import os
import signal
import uuid
from pathlib import Path
from types import FrameType

import click

from agents.dialogue.loader import load_bot
from gateway.auth import mint_token
from gateway.server import DEV_TOKEN_TTL_S
from gateway.tenants import TenantConfig
from infra.ports import find_free_ports
from infra.process import wait_for_stop
from kernel.logs import configure_logging
from kernel.settings import Settings
from parley.stack import Stack
from parley.supervisor import Supervisor

__all__ = ["up"]


@click.command()
@click.option("--workers", default=1, show_default=True, help="Stream worker processes.")
@click.option("--port", type=int, help="Gateway port (default: PARLEY_GATEWAY_PORT, 8080; 0: any).")
@click.option("--bot", "bot_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The bot folder to serve (default: PARLEY_BOT, else the demo bot).")
def up(workers: int, port: int | None, bot_dir: Path | None) -> None:
    """Start everything and print the chat URL; Ctrl-C stops it all."""
    settings = Settings.from_env()
    if "PARLEY_DEV_MODE" not in os.environ:  # on by default here, off for a bare gateway
        settings = settings.replace(dev_mode=True)
    if port is not None:
        settings = settings.replace(gateway_port=port)
    if bot_dir is not None:
        settings = settings.replace(bot_dir=str(bot_dir.resolve()))
    if settings.bot_dir:
        load_bot(Path(settings.bot_dir))  # a broken bot folder: every problem, before starting
    configure_logging("parley-up", settings.log_level, as_json=False)
    stack = Stack(settings)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped while starting: stop the children too
    try:
        click.echo("Starting the broker and the Redis Cluster ...", err=True)
        stack.start_infra()
        click.echo("Preparing the NLU model and knowledge index (built once, then cached) ...",
                   err=True)
        stack.prepare_model()
        stack.prepare_knowledge()
        stack.start_crm()  # the reference CRM the demo bot's actions call
        dev_tenant = _prepare_dev_tenant(stack) if stack.settings.dev_mode else None
        gateway = stack.start_gateway()
        for _ in range(workers):
            stack.start_worker()
        stack.wait_ready()
        click.echo(f"\nParley is up. Chat at {gateway.url}  (Ctrl-C stops it)")
        if dev_tenant is not None:
            token = mint_token(dev_tenant, f"u-{uuid.uuid4().hex[:12]}", ttl_s=DEV_TOKEN_TTL_S)
            click.echo(f"Development mode: {gateway.url}?token={token}")
            click.echo(f"  (a token for a new demo user: GET {gateway.url}dev/token; off with "
                       "PARLEY_DEV_MODE=false)", err=True)
            agent = mint_token(dev_tenant, "agent-1", roles=["agent"], ttl_s=DEV_TOKEN_TTL_S)
            click.echo(f"Agent console: {gateway.api_url}console#token={agent}")
            click.echo("  (an agent token of the demo tenant; more: parley token --tenant "
                       f"{dev_tenant.tenant_id} --user <id> --roles agent)", err=True)
        click.echo(f"Logs: {stack.settings.data_dir / 'logs'}", err=True)
        supervisor = Supervisor(stack, say=functools.partial(click.echo, err=True))
        gave_up = wait_for_stop(supervisor.check)
        if gave_up:
            raise click.ClickException(gave_up)
    finally:  # a ParleyError is reported by the `parley` command (parley/cli.py)
        click.echo("Stopping ...", err=True)
        stack.stop()


def _prepare_dev_tenant(stack: Stack) -> TenantConfig:
    """Development mode: the demo tenant exists, before the gateway serves /dev/token,
    and allows the local chat page's origins (so the gateway's port is fixed here)."""
    if stack.settings.gateway_port == 0:
        stack.settings = stack.settings.replace(gateway_port=find_free_ports(1)[0])
    port = stack.settings.gateway_port
    return stack.ensure_dev_tenant([f"http://{host}:{port}" for host in
                                    dict.fromkeys((stack.settings.gateway_host, "localhost",
                                                   "127.0.0.1"))])


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
