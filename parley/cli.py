"""The ``parley`` command.

Subcommand groups live next to what they drive and are imported lazily, so
``parley infra status`` does not pay for loading ONNX Runtime or Faust:

=========  =====================================
infra      infra/cli.py            embedded broker + Redis Cluster
gateway    gateway/cli.py          the WebSocket gateway
worker     parley/worker.py        a Faust worker running the agents
up         parley/run.py           everything on one machine
nlu        agents/nlu/cli.py       train / evaluate intent models
kb         agents/knowledge/cli.py  ingest / evaluate knowledge bases
bench      benchmarks/cli.py     benchmarks
settings   (here)                  list every setting and its variable
=========  =====================================

A :class:`~kernel.errors.ParleyError` raised by any subcommand (a malformed
``PARLEY_*`` setting, infrastructure that cannot start) ends the command with a
one-line ``Error: ...`` and exit status 1, not a traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from agents.knowledge.settings import KnowledgeSettings
from kernel.errors import ParleyError
from kernel.settings import Settings

__all__ = ["main"]

_SUBCOMMANDS: dict[str, str] = {
    "infra": "infra.cli:infra",
    "gateway": "gateway.cli:gateway",
    "worker": "parley.worker:worker",
    "up": "parley.run:up",
    "nlu": "agents.nlu.cli:nlu",
    "kb": "agents.knowledge.cli:kb",
    "bench": "benchmarks.cli:bench",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*_SUBCOMMANDS, *super().list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ParleyError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_LazyGroup)
def main() -> None:
    """Parley: an event-streaming chatbot platform."""


@main.command("settings")
def show_settings() -> None:
    """List every setting with its environment variable and default."""
    for env, default, help_text in [*Settings.describe(), *KnowledgeSettings.describe()]:
        click.echo(f"{env:<34} {default:<22} {help_text}")


if __name__ == "__main__":
    main()
