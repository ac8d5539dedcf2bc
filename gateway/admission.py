"""Admission control: how much unanswered work a gateway lets into the pipeline.

A gateway that accepts every message keeps accepting when the workers cannot keep
up: the backlog grows, every reply gets later, and the CPU spent taking messages
in (sequence numbers, produce requests, the broker's share) is taken from the
workers that answer them, so throughput falls as the offered load rises. Bounding
the messages a gateway has on the bus without a reply keeps latency bounded
(Little's law: at most ``limit / throughput``) and refuses the excess at once,
with a retryable ``overloaded`` error, before it costs anything downstream.

Every gateway sees every reply (it follows all of ``chat.outbound``), so a reply
delivered by another gateway still releases its message here. A message whose
reply never comes (dead-lettered, lost with a worker's uncommitted state) is
forgotten after ``expiry_s``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["InFlight"]


class InFlight:
    """Event ids this gateway put on the bus that have no reply yet, at most ``limit``."""

    def __init__(self, limit: int, expiry_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or expiry_s <= 0:
            raise ValueError(f"limit must be >= 1 and expiry_s > 0, got {limit}, {expiry_s}")
        self.limit = limit
        self.expiry_s = expiry_s
        self._clock = clock
        self._waiting: set[str] = set()
        self._admitted: deque[tuple[float, str]] = deque()  # oldest first, released ones too

    def __len__(self) -> int:
        return len(self._waiting)

    def admit(self, event_id: str) -> bool:
        """Take ``event_id`` in, unless ``limit`` messages are already waiting for replies."""
        now = self._clock()
        while self._admitted and self._admitted[0][0] <= now - self.expiry_s:
            self._waiting.discard(self._admitted.popleft()[1])
        if len(self._waiting) >= self.limit:
            return False
        self._waiting.add(event_id)
        self._admitted.append((now, event_id))
        return True

    def release(self, event_id: str) -> None:
        """Its reply arrived, or it never reached the bus."""
        self._waiting.discard(event_id)
