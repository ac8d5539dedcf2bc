"""The ``parley`` command.

Subcommand groups live next to what they drive and are imported lazily, so
``parley infra status`` does not pay for loading ONNX Runtime or Faust:

=========  =====================================
infra      infra/cli.py            embedded broker + Redis Cluster
gateway    gateway/cli.py          the WebSocket gateway
tenant     gateway/cli.py          tenants, their API keys and usage
token      gateway/cli.py          mint a user token with a tenant's secret
events     gateway/events_cli.py   publish a business event through a gateway
worker     parley/worker.py        a Faust worker running the agents
up         parley/run.py           everything on one machine
degrade    parley/degrade.py       force a tenant's degradation level
nlu        agents/nlu/cli.py       train / evaluate intent models
kb         agents/knowledge/cli.py  ingest / evaluate knowledge bases
bench      benchmarks/cli.py     benchmarks
settings   (here)                  list every setting and its variable
=========  =====================================

A :class:`~kernel.errors.ParleyError` raised by any subcommand (a malformed
``PARLEY_*`` setting, infrastructure that cannot start) ends the command with a
one-line ``Error: ...`` and exit status 1, not a traceback. So does a third-party
package the install left out (the gateway's install has no NumPy, Faust or ONNX
Runtime): the error names the extra that brings it (:data:`_EXTRAS`), and
``parley --help`` still lists every command.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from agents.knowledge.settings import KnowledgeSettings
from kernel.errors import ParleyError
from kernel.extras import MissingExtra
from kernel.settings import Settings

__all__ = ["main"]

_SUBCOMMANDS: dict[str, str] = {
    "infra": "infra.cli:infra",
    "gateway": "gateway.cli:gateway",
    "tenant": "gateway.cli:tenant",
    "token": "gateway.cli:token",
    "events": "gateway.events_cli:events",
    "worker": "parley.worker:worker",
    "up": "parley.run:up",
    "crm": "infra.crm.cli:crm",
    "degrade": "parley.degrade:degrade",
    "nlu": "agents.nlu.cli:nlu",
    "kb": "agents.knowledge.cli:kb",
    "bench": "benchmarks.cli:bench",
    # a bot builder's tools (docs/bots.md)
    "init": "agents.dialogue.cli:init",
    "validate": "agents.dialogue.cli:validate",
    "train": "agents.dialogue.cli:train",
    "shell": "agents.dialogue.cli:shell",
    "test": "agents.dialogue.testing_cli:test",
    "dialogue": "agents.dialogue.sgd_cli:dialogue",
    "bot": "agents.bots.cli:bot",
}

_EXTRAS: dict[str, str] = {
    "infra": "embedded",
    "worker": "worker",
    "up": "local",
    "crm": "crm",
    "nlu": "train",
    "kb": "train",
    "bench": "bench",
    "train": "train",
    "shell": "train",
    "test": "train",
    "dialogue": "train",
    "bot": "worker",
}
"""The extra (pyproject.toml) that brings what each subcommand imports beyond Parley's
own dependencies (``nlu`` and ``kb`` name ``train``, which holds ``worker``)."""
_OWN_PACKAGES = frozenset({"kernel", "parley", "benchmarks", "gateway", "streams", "agents",
                           "schemas", "infra"})


def _missing_extra(cmd_name: str, exc: ModuleNotFoundError) -> MissingExtra | None:
    """The error to report when ``cmd_name`` could not import ``exc.name``: None when
    that is Parley's own module (a bug, not an install choice) or no extra brings it."""
    module = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(cmd_name)
    if not module or module in _OWN_PACKAGES or extra is None:
        return None
    return MissingExtra(f"parley {cmd_name}", module, extra)


def _unavailable(cmd_name: str, error: MissingExtra) -> click.Command:
    """A stand-in for a subcommand whose module cannot be imported: listed by --help,
    and failing with ``error`` whatever it is given."""

    def fail() -> None:
        raise error

    return click.Command(
        cmd_name, callback=fail, add_help_option=False,
        short_help=f"(not installed: pip install 'parley[{error.extra}]')",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*_SUBCOMMANDS, *super().list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            error = _missing_extra(cmd_name, exc)
            if error is None:
                raise
            return _unavailable(cmd_name, error)
        command: Any = getattr(module, attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ParleyError as exc:
            raise click.ClickException(str(exc)) from exc
        except ModuleNotFoundError as exc:  # imported while the subcommand ran
            error = _missing_extra(ctx.invoked_subcommand or "", exc)
            if error is None:
                raise
            raise click.ClickException(str(error)) from exc


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
