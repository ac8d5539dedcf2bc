"""Example bots shipped with Parley (package data), one folder each.

``demo/`` is a small retail bank + online shop assistant:

* ``nlu.jsonl``: intents, entity spans and out-of-scope examples (the NLU's training data);
* ``responses.json``: reply templates per intent, which may reference entities such as
  ``{order_id}``, plus ``quick_replies``;
* ``knowledge.jsonl``: FAQ documents for the knowledge agent.

Nothing below the top of the project reads this package: the agents take these
files' paths as arguments, and the worker's composition root (``parley/worker.py``),
``parley up`` and the benchmarks pass them down. This package imports nothing of
the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO", "BotFiles"]


@dataclass(frozen=True)
class BotFiles:
    """Where one example bot's files are."""

    folder: Path

    @property
    def nlu(self) -> Path:
        """Training data for intents and entities (JSON lines)."""
        return self.folder / "nlu.jsonl"

    @property
    def responses(self) -> Path:
        """Reply templates per intent (JSON)."""
        return self.folder / "responses.json"

    @property
    def knowledge(self) -> Path:
        """Documents for the knowledge base (JSON lines)."""
        return self.folder / "knowledge.jsonl"


#: The demo bot: a retail bank + online shop assistant.
DEMO = BotFiles(Path(__file__).resolve().parent / "demo")
