"""Deadlines shared by the steps of a start-up."""

from __future__ import annotations

import time
from collections.abc import Callable

from kernel.errors import InfraError

__all__ = ["Deadline", "wait_until"]


class Deadline:
    """A point in time, measured on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


def wait_until(
    ready: Callable[[], bool],
    deadline: Deadline,
    what: str,
    *,
    interval: float = 0.02,
    max_interval: float = 0.25,
    check: Callable[[], None] | None = None,
) -> None:
    """Poll ``ready`` until it returns true, with a growing interval.

    ``check`` runs before every poll and raises to abort early (e.g. when the
    process being waited for has died). Raises :class:`InfraError` naming
    ``what`` when the deadline passes.
    """
    delay = interval
    while True:
        if check is not None:
            check()
        if ready():
            return
        if deadline.expired():
            raise InfraError(f"timed out after {deadline.seconds:g}s waiting for {what}")
        time.sleep(min(delay, deadline.remaining()))
        delay = min(delay * 1.5, max_interval)
