"""Errors of the sentence encoders (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                  (kernel/errors.py)
    └── EncoderError
        ├── EmbedderUnavailable  the weights (or, to fine-tune, PyTorch) are not installed
        └── EmbedderFormatError  an embedder folder is missing or incomplete
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = ["EmbedderFormatError", "EmbedderUnavailable", "EncoderError"]


class EncoderError(ParleyError):
    """Base class of the sentence encoders' errors."""


class EmbedderUnavailable(EncoderError):
    def __init__(self, kind: str, hint: str) -> None:
        super().__init__(kind, hint)
        self.kind, self.hint = kind, hint

    def __str__(self) -> str:
        return f"embedding model {self.kind!r} is not available: {self.hint}"


class EmbedderFormatError(EncoderError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return f"embedder {self.path}: {self.problem}"
