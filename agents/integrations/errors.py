"""Errors of the integrations component (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                       (kernel/errors.py)
    └── IntegrationConfigError        an integrations.yml with errors, each as file:line;
                                      also a ValueError

A call that fails at run time is not an exception of this package: it raises
:class:`~agents.actions.ActionFailed` (the backend said no) or
:class:`~agents.actions.ActionUnavailable` (it could not be reached), which the action
registry turns into the result a flow branches on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kernel.errors import ParleyError

__all__ = ["IntegrationConfigError"]


class IntegrationConfigError(ParleyError, ValueError):
    """An ``integrations.yml`` that cannot be used; ``problems`` lists every one as
    ``file:line: message``."""

    def __init__(self, path: Path, problems: Iterable[str]) -> None:
        self.path, self.problems = path, list(problems)
        super().__init__(path, self.problems)

    def __str__(self) -> str:
        return f"{self.path} has {len(self.problems)} problem(s):\n" + "\n".join(
            f"  {p}" for p in self.problems)
