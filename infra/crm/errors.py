"""Errors of the reference CRM (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                  (kernel/errors.py)
    └── CrmError
        ├── CrmProblem           a request the CRM answers with an HTTP error (status, detail)
        └── CallbackNotTaken     Parley did not take a callback (sent again)
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = ["CallbackNotTaken", "CrmError", "CrmProblem"]


class CrmError(ParleyError):
    """Base of the CRM's errors."""


class CrmProblem(CrmError):
    """A request the CRM refuses: answered with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.status, self.detail = status, detail

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


class CallbackNotTaken(CrmError):
    """Parley did not take a callback (no answer, a 5xx): it is sent again."""
