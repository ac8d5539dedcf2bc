"""The bot builder's commands: ``parley validate | init | train | shell``.

Each is a separate click command (``parley/cli.py`` registers them by name). ``train``
caches what it builds under ``<data dir>/bots/`` (``PARLEY_DATA_DIR``, ``.parley`` by
default; layout in :mod:`agents.dialogue.training`, which the worker uses too). A bot
whose training data did not change is not trained again, and ``shell`` trains on first
use the same way, so ``init`` → ``shell`` works without a separate ``train``.

The shell runs the dialogue manager in the terminal with no infrastructure: the NLU
model in-process, knowledge questions answered from the bot's own index, and actions —
which need the integrations a worker connects — reported as not connected, so the flow
says they failed rather than pretending they ran.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from agents.dialogue.domain import Bot
from agents.dialogue.loader import BotFolderError, load_bot, validate_bot
from agents.dialogue.manager import (
    ActionResult,
    AskKnowledge,
    CallAction,
    DialogueManager,
    HandoffCommand,
    Outcome,
    UserTurn,
)
from agents.dialogue.state import DialogueState
from agents.dialogue.training import KB_TENANT, ensure_trained
from agents.integrations.config import validate_integrations
from kernel.settings import Settings

__all__ = ["TEMPLATE", "BotKnowledge", "init", "shell", "train", "validate"]

TEMPLATE = Path(__file__).with_name("template")
T = TypeVar("T")

_BOT = click.argument("bot", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _load(folder: Path) -> Bot:
    try:
        return load_bot(folder)
    except BotFolderError as exc:
        raise click.ClickException(str(exc)) from exc


def _cache_root() -> Path:
    return Settings.from_env().data_dir / "bots"


# --------------------------------------------------------------------------- commands


@click.command("validate")
@_BOT
def validate(bot: Path) -> None:
    """Check the bot folder BOT; print every problem as file:line: message."""
    problems = validate_bot(bot)
    actions = None if any(p.severity == "error" for p in problems) else load_bot(bot).actions
    problems += validate_integrations(bot, actions)  # integrations.yml (docs/integrations.md)
    for problem in problems:
        click.echo(str(problem))
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    if errors:
        click.echo(f"{bot}: {errors} error(s), {warnings} warning(s)", err=True)
        sys.exit(1)
    click.echo(f"{bot}: valid ({warnings} warning(s))", err=True)


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a small working bot in DIRECTORY (which must be empty or new)."""
    if directory.exists() and any(directory.iterdir()):
        raise click.ClickException(f"{directory} is not empty: choose a new folder")
    shutil.copytree(TEMPLATE, directory, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    click.echo(f"created a bot in {directory}; next:\n"
               f"  parley validate {directory}\n"
               f"  parley train {directory}\n"
               f"  parley shell {directory}\n"
               f"{directory}/README.md explains each file.")


@click.command("train")
@_BOT
def train(bot: Path) -> None:
    """Validate BOT, then train its NLU model and knowledge index (cached by content)."""
    loaded = _load(bot)
    for warning in loaded.warnings:
        click.echo(warning, err=True)
    trained = ensure_trained(loaded, _cache_root(), show_progress=True, echo=True)
    click.echo(json.dumps({"bot": str(bot), "version": loaded.content_hash(),
                           "nlu_model": str(trained.nlu_dir),
                           "knowledge_index": str(trained.kb_dir) if trained.kb_dir else None}))


@click.command("shell")
@_BOT
@click.option("--debug", is_flag=True, help="After each turn show intent, entities, slots "
                                            "and the active flow.")
def shell(bot: Path, debug: bool) -> None:
    """Chat with BOT in the terminal, without any infrastructure (Ctrl-D quits)."""
    from agents.nlu.model import NLUModel

    trained = ensure_trained(_load(bot), _cache_root(), echo=True)
    model = NLUModel.load(trained.nlu_dir)
    knowledge = BotKnowledge(trained.kb_dir)
    manager = DialogueManager(trained.bot)
    state = DialogueState()
    if not trained.bot.has_knowledge:
        click.echo("(this bot has no knowledge/ documents: questions for the knowledge base "
                   "get a note instead of an answer)", err=True)
    click.echo(f"chatting with {trained.bot.settings.name}; Ctrl-D quits", err=True)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo("", err=True)
            break
        if not text:
            continue
        if text.startswith("/"):
            state = _console(manager, state, knowledge, text)
            if debug:
                _debug(None, state)
            continue
        now = datetime.now(UTC).replace(tzinfo=None)
        understood = model.understand(text, now)
        turn = UserTurn(
            text, understood.intent, understood.confidence, understood.oos,
            tuple(understood.ranking),
            tuple({"entity": e.entity, "start": e.start, "end": e.end, "text": e.text,
                   "value": e.value, "source": e.source} for e in understood.entities))
        now_ms = int(time.time() * 1000)
        outcome = manager.step(state, turn, now_ms)
        outcome = _serve(manager, outcome, knowledge, now_ms)
        state = outcome.state
        if debug:
            _debug(turn, state)


class BotKnowledge:
    """Answers from the bot's own index, in-process (an LLM when PARLEY_LLM_* says so)."""

    def __init__(self, index: Path | None) -> None:
        self.index = index
        self._service: object | None = None

    def answer(self, question: str) -> tuple[str, tuple[str, ...], bool]:
        """The answer's text, its sources, and whether it answers (not a refusal)."""
        if self.index is None:
            return ("(no answer: this bot has no knowledge documents; add some under "
                    "knowledge/ and they are indexed on the next run)", (), False)
        from agents.knowledge.knowledge_base import KnowledgeBase
        from agents.knowledge.service import KnowledgeService
        from agents.knowledge.settings import KnowledgeSettings

        if self._service is None:
            self._service = KnowledgeService.from_settings(KnowledgeBase.open(self.index),
                                                           KnowledgeSettings.from_env())
        assert isinstance(self._service, KnowledgeService)
        answer = _run_to_end(self._service.answer(KB_TENANT, question))
        return answer.text, tuple(answer.sources), answer.mode != "refusal"


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from synchronous code, also when the caller runs in an
    event loop (``parley test``'s runner): then on a loop of its own, in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _serve(manager: DialogueManager, outcome: Outcome, knowledge: BotKnowledge,
           now_ms: int) -> Outcome:
    """Print the outcome and serve its request, until nothing is pending."""
    for _ in range(20):
        _print(outcome)
        request = outcome.request
        if isinstance(request, AskKnowledge):
            text, sources, answered = knowledge.answer(request.question)
            outcome = manager.resume_knowledge(outcome.state, text, sources, now_ms,
                                               answered=answered)
        elif isinstance(request, CallAction):
            click.echo(f"  (action {request.name}({json.dumps(dict(request.inputs))}) is not "
                       f"connected in the shell: the flow is told it failed)", err=True)
            outcome = manager.resume_action(
                outcome.state, ActionResult(request.name, False,
                                            error="not connected in the shell"), now_ms)
        else:
            return outcome
    return outcome


def _print(outcome: Outcome) -> None:
    for utterance in outcome.utterances:
        if not utterance.text:  # a delivery receipt (the message went to the person)
            click.echo(f"  (relayed to {outcome.state.agent or 'the person'})", err=True)
            continue
        speaker = utterance.agent_id or "agent" if utterance.sender == "agent" else "bot"
        click.echo(f"{speaker}> {utterance.text}")
        if utterance.quick_replies:
            click.echo("     " + "  ".join(f"[{q}]" for q in utterance.quick_replies))
        if utterance.sources:
            click.echo(f"     sources: {', '.join(utterance.sources)}")
    if outcome.handoff:
        click.echo("  (handed over to a person; no agent console runs in the shell: play the "
                   "person with /claim, /say TEXT, /note TEXT, /release, /close or /expire)",
                   err=True)
    elif outcome.state.handoff and not outcome.utterances:
        click.echo("  (a person holds this conversation; the bot stays quiet: /say TEXT answers "
                   "as them, /release hands it back)", err=True)


#: The shell's stand-ins for the agent console's commands (docs/handoff.md), as the
#: HandoffCommand type each becomes.
CONSOLE_COMMANDS = {"/claim": "claimed", "/say": "agent_message", "/note": "note",
                    "/release": "released", "/close": "closed", "/expire": "expired"}
SHELL_AGENT = "shell-agent"


def _console(manager: DialogueManager, state: DialogueState, knowledge: BotKnowledge,
             line: str) -> DialogueState:
    """Apply ``/command [text]`` as the agent console would (claim, say, note, release,
    close) or as the handoff timer would (expire), so a builder can walk a handoff through
    in the shell; the state after it."""
    name, _, text = line.partition(" ")
    kind = CONSOLE_COMMANDS.get(name)
    if kind is None:
        click.echo(f"  (unknown command {name}: {', '.join(CONSOLE_COMMANDS)})", err=True)
        return state
    if not state.handoff:
        click.echo("  (nothing is handed over: the console commands apply after a handoff)",
                   err=True)
        return state
    if kind not in ("claimed", "expired") and not state.agent:
        click.echo("  (nobody holds the conversation yet: /claim it first)", err=True)
        return state
    now_ms = int(time.time() * 1000)
    command = HandoffCommand(kind, state.handoff_request, SHELL_AGENT, text.strip())
    outcome = manager.command(state, command, now_ms)
    if kind == "note":
        click.echo("  (note kept with the conversation)", err=True)
    return _serve(manager, outcome, knowledge, now_ms).state


def _debug(turn: UserTurn | None, state: DialogueState) -> None:
    if turn is not None:  # None after a console command: no message was understood
        entities = ", ".join(f"{e['entity']}={e['value']!r}" for e in turn.entities) or "none"
        scope = ", out of scope" if turn.oos else ""
        click.echo(f"  intent: {turn.intent} ({turn.confidence:.2f}{scope}) | "
                   f"entities: {entities}", err=True)
    click.echo(f"  slots: {json.dumps(dict(state.slots), ensure_ascii=False)} | flow: "
               f"{state.active_flow or '-'} | asking: {state.requested_slot or '-'}"
               f"{' | HANDOFF' if state.handoff else ''}"
               f"{f' (held by {state.agent})' if state.agent else ''}", err=True)
