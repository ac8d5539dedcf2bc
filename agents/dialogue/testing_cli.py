"""``parley test BOT``: run a bot's conversation test cases (:mod:`agents.dialogue.testcases`).

Without ``--url`` the bot runs in process (its NLU model, trained on first use and
cached, and the dialogue manager: :mod:`agents.dialogue.inline`); with ``--url
ws://HOST:PORT/ws`` every case is a new conversation with a running stack. The default
cases are ``BOT/tests/*.yml``. The exit status is 1 when any case fails, 2 when the
cases or the bot cannot be read.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from agents.dialogue.inline import (
    InlineBot,
    InlineConversation,
    load_inline_bot,
    stubbed_actions,
)
from agents.dialogue.loader import load_bot
from agents.dialogue.testcases import (
    CaseReport,
    Conversation,
    TestCase,
    WebSocketConversation,
    dev_token,
    load_cases,
    run_cases,
)
from kernel.errors import ParleyError
from kernel.settings import Settings

__all__ = ["default_cases", "run_inline", "run_websocket", "test"]


def default_cases(bot_dir: Path) -> list[Path]:
    return sorted((bot_dir / "tests").glob("*.yml")) + sorted((bot_dir / "tests").glob("*.yaml"))


def run_inline(inline: InlineBot, cases: list[TestCase]) -> CaseReport:
    """Every case on a new in-process conversation with the bot."""

    async def new_conversation(case: TestCase) -> Conversation:
        return InlineConversation(inline, actions=stubbed_actions(case.actions))

    return asyncio.run(run_cases(cases, new_conversation))


def run_websocket(url: str, cases: list[TestCase], *, token: str | None = None,
                  api_key: str | None = None, use_dev_token: bool = False,
                  timeout_s: float = 10.0) -> CaseReport:
    """Every case on a new conversation through a running stack's ``/ws``; with
    ``use_dev_token``, each as a new bot tester from the gateway's ``/dev/token`` (a new
    user each time, as with an API key: what one case did to a customer's data in the
    business systems does not change the next case's)."""

    async def new_conversation(case: TestCase) -> Conversation:
        own = await dev_token(url, timeout_s=timeout_s) if use_dev_token else token
        return await WebSocketConversation.open(url, token=own, api_key=api_key,
                                                timeout_s=timeout_s)

    return asyncio.run(run_cases(cases, new_conversation))


@contextmanager
def _readable_errors() -> Iterator[None]:
    try:
        yield
    except (ParleyError, OSError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


@click.command("test")
@click.argument("bot_dir", metavar="BOT",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--cases", "case_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A test case file (repeatable). Default: BOT/tests/*.yml.")
@click.option("--url", help="Run against a running stack: ws://HOST:PORT/ws.")
@click.option("--token", envvar="PARLEY_TOKEN",
              help="A user's token to connect with --url (`parley token`; PARLEY_TOKEN).")
@click.option("--api-key", envvar="PARLEY_API_KEY",
              help="Or a tenant API key: each case speaks for a new user (PARLEY_API_KEY).")
@click.option("--dev-token", "use_dev_token", is_flag=True,
              help="Or, against a stack in development mode (`parley up`), a bot tester's "
                   "token from its /dev/token.")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True,
              help="Seconds to wait for a reply with --url.")
@click.option("--cache", "cache_root", type=click.Path(file_okay=False, path_type=Path),
              help="Where trained bots are cached, as by `parley train` (default: "
                   "PARLEY_DATA_DIR/bots).")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"passed": N, "failed": N, "failures": [...]}.')
def test(bot_dir: Path, case_files: tuple[Path, ...], url: str | None, token: str | None,
         api_key: str | None, use_dev_token: bool, timeout_s: float, cache_root: Path | None,
         as_json: bool) -> None:
    """Run BOT's conversation test cases, in process or against a running stack.

    Against a stack, slot and flow steps need a token with the bot_tester role
    (`parley token --role bot_tester`, or --dev-token): the gateway shows the dialogue
    state to no one else."""
    with _readable_errors():
        paths = list(case_files) or default_cases(bot_dir)
        if not paths:
            raise click.UsageError(f"no test cases: {bot_dir / 'tests'} has no .yml file "
                                   "and no --cases was given")
        cases = load_cases(paths)
        if use_dev_token and not url:
            raise click.UsageError("--dev-token needs --url")
        if url:
            report = run_websocket(url, cases, token=token, api_key=api_key,
                                   use_dev_token=use_dev_token, timeout_s=timeout_s)
        else:
            inline = load_inline_bot(load_bot(bot_dir),
                                     cache_root or Settings.from_env().data_dir / "bots")
            report = run_inline(inline, cases)
    click.echo(json.dumps(report.as_json(), ensure_ascii=False) if as_json else report.text())
    if not report.ok:
        sys.exit(1)
