"""Example bots shipped with Parley (package data), one folder each.

``demo/`` is a small retail bank + online shop assistant, a bot folder as
docs/bots.md describes: ``bot.yml`` (settings), ``intents.yml`` (the NLU's training
data, entities annotated inline), ``slots.yml``, ``responses.yml``, ``flows.yml`` and
``knowledge/`` (FAQ documents for the knowledge agent).

Nothing below the top of the project reads this package: the agents take these
files' paths as arguments, and the worker's composition root (``parley/worker.py``),
``parley up`` and the benchmarks pass them down. This package imports nothing of
the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO", "BotFiles", "bot_files"]


@dataclass(frozen=True)
class BotFiles:
    """Where one example bot's files are."""

    folder: Path

    @property
    def nlu(self) -> Path:
        """Training data for intents and entities (the bot's intents file)."""
        return self.folder / "intents.yml"

    @property
    def knowledge(self) -> Path:
        """Documents for the knowledge base (JSON lines)."""
        return self.folder / "knowledge" / "faq.jsonl"


#: The demo bot: a retail bank + online shop assistant.
DEMO = BotFiles(Path(__file__).resolve().parent / "demo")


def bot_files(folder: str | Path = "") -> BotFiles:
    """The bot in ``folder`` (``PARLEY_BOT``); the demo bot when it is empty."""
    return BotFiles(Path(folder)) if str(folder) else DEMO
