"""Errors of the NLU (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                  (kernel/errors.py)
    └── NluError
        ├── DataError            a malformed training or evaluation file (file and line)
        └── ManifestError        a model folder that cannot be loaded

Both are also ``ValueError``s: they report bad input, and callers that catch
``ValueError`` keep catching them.
"""

from __future__ import annotations

from pathlib import Path

from kernel.errors import ParleyError

__all__ = ["DataError", "ManifestError", "NluError"]


class NluError(ParleyError):
    """Base class of the NLU's errors."""


class DataError(NluError, ValueError):
    """A malformed training or evaluation file, with the file and line."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(path, line, reason)
        self.path, self.line, self.reason = path, line, reason

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class ManifestError(NluError, ValueError):
    """A model folder that cannot be loaded, with the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"model folder {self.path} is not usable: {self.reason}"
