"""Errors of the bus (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                    (kernel/errors.py)
    └── BusError                   the broker did not do what was asked
        ├── FollowerError          a topic follower cannot read (streams/follow.py)
        │   └── TopicNotFoundError the followed topic does not exist or has no partitions
        └── DeliveryError          the broker did not accept an event (gateway/bus.py)
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = ["BusError", "FollowerError", "TopicNotFoundError"]


class BusError(ParleyError):
    """The broker did not do what was asked (after the client's own retries)."""


class FollowerError(BusError):
    """A follower of ``topic`` cannot read it (metadata unavailable, the client failed)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(topic, reason)
        self.topic, self.reason = topic, reason

    def __str__(self) -> str:
        return f"cannot follow topic {self.topic}: {self.reason}"


class TopicNotFoundError(FollowerError):
    """The followed topic does not exist, or has no partitions."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic, "it does not exist or has no partitions "
                                "(create it with `parley infra up`)")
