"""The loader a worker plugs into its :class:`~agents.bots.registry.BotRegistry`.

:func:`load_served_bot` makes what a worker serves of an unpacked version: the
bot's flows (:func:`agents.dialogue.loader.load_bot`) and its NLU model
(:class:`agents.nlu.model.NLUModel`), once it has checked that the model was
trained on the bot's intents. The bot's ``version`` is set to the published
version's id, so the dialogue state's ``bot_version`` names the version the
registry holds (:meth:`BotRegistry.for_conversation` looks it up by that id).

It runs on the ``bots`` follower's thread, before the swap: an exception here
(a broken bot, an unusable model) leaves the tenant on the version it had.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from agents.bots.bundle import UnpackedBot
from agents.bots.errors import BundleError
from agents.dialogue.domain import Bot
from agents.dialogue.loader import load_bot
from agents.nlu.model import NLUModel

__all__ = ["ServedBot", "intents_mismatch", "load_served_bot"]


@dataclass(frozen=True)
class ServedBot:
    """One version as a worker serves it."""

    bot: Bot
    model: NLUModel


def intents_mismatch(bot_intents: Iterable[str], model_labels: Iterable[str]) -> str | None:
    """What differs between a bot's intents and a model's labels; None when they agree."""
    intents, labels = set(bot_intents), set(model_labels)
    missing, unknown = sorted(intents - labels), sorted(labels - intents)
    if not missing and not unknown:
        return None
    parts = ([f"it lacks {', '.join(missing)}"] if missing else []) + \
        ([f"it knows {', '.join(unknown)}, which the bot does not"] if unknown else [])
    return "; ".join(parts)


def load_served_bot(unpacked: UnpackedBot, *, threads: int = 1) -> ServedBot:
    """The bot and NLU model of ``unpacked``; raises when either cannot be served."""
    bot = load_bot(unpacked.bot_dir)
    model = NLUModel.load(unpacked.model_dir, threads=threads)
    problem = intents_mismatch(bot.intents, model.labels)
    if problem is not None:
        raise BundleError(f"bot version {unpacked.version[:12]}: its model was not trained "
                          f"on its intents; {problem}")
    return ServedBot(replace(bot, version=unpacked.version), model)
