"""``parley dialogue evaluate``: a bot's dialogue state tracking on SGD dialogues.

Every user turn of every dialogue with a frame of ``--service`` goes through the bot in
process (:class:`BotTracker`: its NLU model and dialogue manager, :mod:`agents.dialogue.
inline`), and the state it holds is scored with the DSTC8 metrics
(:mod:`agents.dialogue.sgd`). The schema defaults to the dialogues file's sibling
(``dev_dialogues.json`` → ``dev_schema.json``, else ``schema.json``); the name mapping
to ``BOT/sgd.yml``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from agents.dialogue.inline import InlineBot, load_inline_bot, with_requested_slot
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import UserTurn
from agents.dialogue.sgd import (
    SgdDataError,
    SgdMapping,
    SystemContext,
    TrackedState,
    evaluate_dialogues,
    load_dialogues,
    load_mapping,
    load_schema,
)
from agents.dialogue.slots import parse_amount, parse_boolean
from agents.dialogue.state import DialogueState
from agents.nlu.recognisers.numbers import find_amounts
from kernel.errors import ParleyError
from kernel.settings import Settings

__all__ = ["BotTracker", "default_schema", "dialogue", "evaluate"]


class BotTracker:
    """A bot's dialogue manager as an SGD tracker (:class:`agents.dialogue.sgd.Tracker`).

    Before each user turn the dataset system's requested slot, when it asked one,
    replaces the state's requested slot (otherwise the bot's own stays); after an intent
    the system offered, an affirming answer (an affirm intent, or a message that starts
    with a yes) counts as that intent. After the system asked for a confirmation, a message
    that neither agrees nor objects counts as agreeing, as the dataset's system went
    ahead then. A handoff is released at once: the dataset's system
    went on answering, and so does the bot. An amount is reported
    in the words the user gave it in (an NLU entity or a recognised amount of the message
    whose value is the slot's new value), as SGD's values are spans of the user's text.
    """

    def __init__(self, inline: InlineBot, mapping: SgdMapping, *, step_ms: int = 1000) -> None:
        self.inline, self.mapping, self.step_ms = inline, mapping, step_ms
        self.state = DialogueState()
        self.now_ms = 1_800_000_000_000
        self.surface: dict[str, str] = {}

    def reset(self) -> None:
        self.state = DialogueState()
        self.surface = {}
        self.now_ms += 24 * 3600 * 1000

    def user_turn(self, text: str, context: SystemContext) -> TrackedState:
        self.now_ms += self.step_ms
        state = self.state
        if context.requested_slot:
            state = with_requested_slot(state, self.mapping.bot_slot(context.requested_slot))
        message = self.inline.understand(text, self.now_ms)
        settings = self.inline.bot.settings
        answer = parse_boolean(text)
        accepts = (message.intent in settings.affirm_intents and not message.oos) \
            or answer is True
        declines = answer is False or message.intent in (*settings.deny_intents,
                                                         *settings.cancel_intents)
        if context.confirming and not accepts and not declines and \
                settings.affirm_intents and state.requested_slot is not None:
            # The dataset's system asked for a confirmation and went ahead when the user
            # moved on without objecting ("Thanks. How long will it take?"): so does the bot.
            message = replace(message, intent=settings.affirm_intents[0], confidence=1.0,
                              oos=False)
        if context.offered_intent and accepts:
            flows = self.mapping.intents.get(context.offered_intent, ())
            start = next((intent for name in flows if name in self.inline.bot.flows
                          for intent in self.inline.bot.flows[name].start_intents), None)
            if start is not None:
                message = replace(message, intent=start, confidence=1.0,
                                  ranking=((start, 1.0),))
        before = dict(state.slots)
        result = self.inline.turn(state, message, self.now_ms)
        self.state = result.state
        if self.state.handoff:  # no person answers in a replay: the bot takes over again
            self.state = self.inline.manager.release_handoff(self.state, self.now_ms)
        self._update_surface(before, result.state.slots, message)
        return TrackedState(result.state.active_flow, dict(result.state.slots),
                            result.flows_seen, message.intent, answer, dict(self.surface))

    def _update_surface(self, before: Mapping[str, Any], after: Mapping[str, Any],
                        message: UserTurn) -> None:
        for name in list(self.surface):
            if after.get(name) is None:
                del self.surface[name]
        currency = self.inline.bot.settings.default_currency
        for name, value in after.items():
            spec = self.inline.bot.slots.get(name)
            if value == before.get(name) or spec is None:
                continue
            self.surface.pop(name, None)
            if spec.type != "amount":
                continue
            candidates = [str(e.get("text") or "") for e in message.entities]
            candidates += [message.text[start:end] for start, end, _ in
                           find_amounts(message.text)]
            for words in candidates:
                if words and parse_amount(words, currency) == value:
                    self.surface[name] = words
                    break


def default_schema(dialogues: Path) -> Path:
    sibling = dialogues.with_name(dialogues.name.replace("dialogues", "schema"))
    if sibling != dialogues and sibling.is_file():
        return sibling
    return dialogues.with_name("schema.json")


@contextmanager
def _readable_errors() -> Iterator[None]:
    try:
        yield
    except (ParleyError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def dialogue() -> None:
    """Dialogue management: evaluation on SGD dialogues."""


@dialogue.command()
@click.option("--bot", "bot_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dialogues", "dialogues_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SGD dialogues (a JSON list).")
@click.option("--service", required=True, help="The SGD service whose frames are scored.")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="The SGD schema (default: beside the dialogues).")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False,
                                                            path_type=Path),
              help="Schema names to the bot's (default: BOT/sgd.yml).")
@click.option("--predictions", "predictions_file",
              type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write one JSON line per scored frame here.")
@click.option("--cache", "cache_root", type=click.Path(file_okay=False, path_type=Path),
              help="Where trained bots are cached, as by `parley train` (default: "
                   "PARLEY_DATA_DIR/bots).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(bot_dir: Path, dialogues_file: Path, service: str, schema_file: Path | None,
             mapping_file: Path | None, predictions_file: Path | None, cache_root: Path | None,
             as_json: bool) -> None:
    """Joint goal, average goal, active intent accuracy and requested slots F1."""
    with _readable_errors():
        schema = load_schema(schema_file or default_schema(dialogues_file))
        if service not in schema:
            raise SgdDataError(f"the schema has no service {service!r} (it has "
                               f"{', '.join(sorted(schema))})")
        spec = schema[service]
        mapping = load_mapping(mapping_file or bot_dir / "sgd.yml", spec)
        bot = load_bot(bot_dir)
        inline = load_inline_bot(bot, cache_root or Settings.from_env().data_dir / "bots")
        metrics, predictions = evaluate_dialogues(load_dialogues(dialogues_file), spec, mapping,
                                                  BotTracker(inline, mapping))
        if predictions_file is not None:
            predictions_file.write_text(
                "".join(json.dumps(p.as_json(service), ensure_ascii=False) + "\n"
                        for p in predictions), encoding="utf-8")
    result = metrics.as_json()
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:<24} {value}")
    sys.stdout.flush()
