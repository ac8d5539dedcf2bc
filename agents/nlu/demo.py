"""The demo bot's model, trained on first use and cached by content hash.

The training file comes from the caller (the shipped demo is ``examples/demo/nlu.jsonl``,
passed down by the worker's composition root, ``parley up`` and the benchmarks): the
agents do not know where example bots live.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from agents.nlu.manifest import MANIFEST_NAME
from agents.nlu.recognisers import RecogniserConfig
from agents.nlu.train import (
    CODE_VERSION,
    TrainingParams,
    require_training_packages,
    train_model_from_files,
)
from kernel.extras import MissingExtra
from kernel.files import atomic_directory
from kernel.settings import Settings

__all__ = ["DEMO_COUNTRY_CODE", "DEMO_ID_PATTERNS", "demo_data_hash", "ensure_demo_model",
           "resolve_nlu_model"]

log = logging.getLogger(__name__)

#: The demo bot's recogniser settings, as examples/demo/bot.yml's ``nlu:`` gives them (its
#: order numbers, 5 to 10 digits, are the dialogue's ``order_id`` pattern slot).
DEMO_ID_PATTERNS: dict[str, str] = {
    "account_id": r"\b(?:account\s*(?:number|no\.?|id)?\s*#?\s*)(\d{8})\b",
}
DEMO_COUNTRY_CODE = "44"


def demo_data_hash(nlu_file: Path) -> str:
    """Hash of the demo data, its recogniser settings and the training code version."""
    digest = hashlib.sha256(Path(nlu_file).read_bytes())
    digest.update(repr(sorted(DEMO_ID_PATTERNS.items())).encode())
    digest.update(DEMO_COUNTRY_CODE.encode())
    digest.update(CODE_VERSION.encode())
    return digest.hexdigest()[:16]


def ensure_demo_model(cache_root: Path, nlu_file: Path) -> Path:
    """The model of ``nlu_file``, in ``cache_root/<data-hash>/``, trained on first call.

    Training writes to a temporary folder renamed into place, so concurrent
    callers never load half a model; when another process finished first, its
    folder (with the same content) is kept.
    """
    folder = Path(cache_root) / demo_data_hash(nlu_file)
    if (folder / MANIFEST_NAME).is_file():
        return folder

    log.info("nlu.demo.train folder=%s", folder)
    params = TrainingParams(
        recognisers=RecogniserConfig(
            id_patterns=DEMO_ID_PATTERNS, default_country_code=DEMO_COUNTRY_CODE
        )
    )
    try:
        require_training_packages(params)
    except MissingExtra as exc:
        raise exc.needed_for("training the demo NLU model on first start (PARLEY_NLU_MODEL "
                             "names a trained model instead)") from exc
    with atomic_directory(folder, replace=False) as build:
        train_model_from_files([Path(nlu_file)], build, params)
    return folder


def resolve_nlu_model(settings: Settings, nlu_file: Path) -> Path:
    """The NLU model folder a worker serves: PARLEY_NLU_MODEL, else the model of the demo
    bot's ``nlu_file``, trained once under ``settings.data_dir/models``."""
    if settings.nlu_model_dir:
        return Path(settings.nlu_model_dir)
    return ensure_demo_model(settings.data_dir / "models", nlu_file)
