"""A small bot folder written into tmp_path, which each test breaks in its own way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = "\n".join(f"      - example number {n} of {{name}}" for n in range(12))

BASE: dict[str, str] = {
    "bot.yml": "name: tiny\ndefault_currency: EUR\n",
    "intents.yml": (
        "intents:\n"
        "  order_status:\n    examples:\n"
        "      - where is my order [12345](order_id)\n"
        + EXAMPLES.format(name="order_status") + "\n"
        "  greet:\n    examples:\n" + EXAMPLES.format(name="greet") + "\n"
        "  cancel:\n    examples:\n" + EXAMPLES.format(name="cancel") + "\n"
        "  affirm:\n    examples:\n" + EXAMPLES.format(name="affirm") + "\n"
        "  deny:\n    examples:\n" + EXAMPLES.format(name="deny") + "\n"
    ),
    "slots.yml": (
        "slots:\n"
        "  order_id:\n    type: pattern\n    pattern: '\\b(\\d{5,10})\\b'\n"
    ),
    "responses.yml": (
        "responses:\n"
        "  utter_ask_order_id:\n    - What's the order number?\n"
        "  utter_order_next:\n    - Order {order_id} is on the Orders page.\n"
    ),
    "flows.yml": (
        "flows:\n"
        "  track_order:\n"
        "    start:\n      intents: [order_status]\n"
        "    steps:\n"
        "      - collect: order_id\n"
        "      - say: utter_order_next\n"
    ),
}

WriteBot = Callable[..., Path]


@pytest.fixture
def write_bot(tmp_path: Path) -> WriteBot:
    """``write_bot(**{"flows.yml": text})`` writes BASE with those files replaced (None
    leaves a file out) and returns the folder."""

    def write(**files: str | None) -> Path:
        folder = tmp_path / "bot"
        folder.mkdir(exist_ok=True)
        merged = {**BASE, **{k.replace("_yml", ".yml"): v for k, v in files.items()}}
        for name, text in merged.items():
            path = folder / name
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
        return folder

    return write
