from __future__ import annotations

from pathlib import Path

import pytest

from agents.dialogue.loader import load_bot
from agents.dialogue.training import ensure_nlu_model
from agents.nlu.model import NLUModel
from examples import DEMO


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo domain's model, trained once per test session (a few seconds)."""
    return ensure_nlu_model(load_bot(DEMO.folder), tmp_path_factory.mktemp("nlu-cache"))


@pytest.fixture(scope="session")
def demo_model(demo_model_dir: Path) -> NLUModel:
    return NLUModel.load(demo_model_dir)
