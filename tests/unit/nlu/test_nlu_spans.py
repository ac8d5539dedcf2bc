"""Span refinement after the tagger: boundary candidates, boundary and type choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.nlu.data import load_examples
from agents.nlu.manifest import Manifest
from agents.nlu.model import NLUModel
from agents.nlu.results import EntityMatch
from agents.nlu.spans import LinearTable, SpanModels, boundary_candidates
from agents.nlu.text import tokenize
from agents.nlu.train import TrainingParams, train_model
from tests.unit.nlu.cases import TAGS, tag_scores


def _table(weights: dict[str, list[float]], bias: list[float]) -> LinearTable:
    names = sorted(weights)
    return LinearTable(
        {n: i for i, n in enumerate(names)},
        np.array([weights[n] for n in names], np.float32).reshape(len(names), len(bias)),
        np.array(bias, np.float32),
    )


def test_candidates_are_the_run_its_neighbours_and_overlapping_recogniser_matches() -> None:
    tokens = tokenize("paid on 3rd of march ok")  # paid on 3 rd of march ok
    match = EntityMatch("date", 8, 20, "3rd of march", "2024-03-03", "date")
    cands = boundary_candidates(tokens, (2, 4, "date"), [match])
    assert cands == [
        (2, 4, "run"), (1, 4, "+left"), (2, 5, "+right"), (3, 4, "-left"), (2, 3, "-right"),
        (2, 6, "rec:date"),
    ]
    assert boundary_candidates(tokens, (0, 1, "date"), []) == [(0, 1, "run"), (0, 2, "+right")]


def test_refine_moves_a_boundary_and_changes_a_type() -> None:
    tokens = tokenize("send it to katye tao until friday")
    scores = tag_scores([
        {"O": 1.0}, {"O": 1.0}, {"O": 1.0},
        {"O": 0.2, "B-person": 0.1},  # katye: nearly a name
        {"O": 0.0, "B-person": 1.0},  # tao
        {"O": 1.0},
        {"O": -1.0, "B-date": 1.0, "B-date_to": 0.8},  # friday
    ])
    runs = [(4, 5, "person"), (6, 7, "date")]
    boundary = _table({"add:pc=3": [2.0], "add:cue": [-3.0]}, [0.0])
    types = _table({"cue=until": [0.0, 1.0, 0.0], "b": [0.0, 0.0, 0.0]}, [0.0, 0.0, 0.0])
    models = SpanModels(boundary, types, ("date", "date_to", "person"))
    pieces = {"katye": 3}
    refined = models.refine(tokens, scores, TAGS, runs, [], lambda w: pieces.get(w, 1))
    assert refined == [(3, 5, "person"), (6, 7, "date_to")]
    # without the models the runs stay as they are
    plain = SpanModels(None, None, ())
    assert plain.refine(tokens, scores, TAGS, runs, [], lambda w: 1) == runs


def test_span_models_round_trip_through_npz(tmp_path: Path) -> None:
    models = SpanModels(
        _table({"k=run": [0.5]}, [0.1]), _table({"b": [1.0, -1.0]}, [0.0, 0.2]), ("a", "b"), 0.7
    )
    models.save(tmp_path / "spans.npz")
    back = SpanModels.load(tmp_path / "spans.npz")
    assert back.type_labels == ("a", "b")
    assert back.type_weight == np.float32(0.7)
    assert back.boundary is not None and back.types is not None
    assert back.boundary.score({"k=run": 1.0, "unknown": 1.0}) == np.float32(0.6)
    assert back.types.sum_rows(["b", "b", "unknown"]).tolist() == [1.0, -0.800000011920929]
    no_boundary = SpanModels(None, models.types, ("a", "b"))
    no_boundary.save(tmp_path / "types_only.npz")
    assert SpanModels.load(tmp_path / "types_only.npz").boundary is None


def test_demo_model_ships_span_models(demo_model_dir: Path, demo_model: NLUModel) -> None:
    assert Manifest.load(demo_model_dir).files["span_models"] == "spans.npz"
    u = demo_model.understand("please block my credit card")
    assert ("card_type", "credit") in {(e.entity, e.text) for e in u.entities}


def test_span_refinement_can_be_turned_off(tmp_path: Path) -> None:
    lines = [
        {"text": f"move it {cue} {day}", "intent": "move",
         "entities": [{"start": 9 + len(cue), "end": 9 + len(cue) + len(day),
                       "entity": "date_from" if cue == "from" else "date_to"}]}
        for cue in ("from", "until") for day in ("monday", "tuesday", "friday", "sunday")
    ] + [{"text": "hello there", "intent": "greet", "entities": []}] * 4
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    on = train_model(load_examples([path]), tmp_path / "on", TrainingParams())
    off = train_model(load_examples([path]), tmp_path / "off", TrainingParams(refine_spans=False))
    assert "span_models" in on.files  # a type model: too few messages for the boundary one
    assert "span_models" not in off.files
    model = NLUModel.load(tmp_path / "on")
    found = {(e.entity, e.text) for e in model.understand("move it until friday").entities}
    assert ("date_to", "friday") in found
