"""Errors of the channel adapters (drawn in kernel/errors.py's tree).

Each carries the channel's name and a reason that is safe to send back to the
caller: it never holds a secret, a signature or the request's body.
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = ["ChannelError", "Overloaded", "PayloadError", "SendError", "SignatureError"]


class ChannelError(ParleyError):
    """Something about a channel's traffic (Slack, SMS) went wrong."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(channel, reason)
        self.channel, self.reason = channel, reason

    def __str__(self) -> str:
        return f"{self.channel}: {self.reason}"


class SignatureError(ChannelError):
    """A webhook request whose signature is missing, wrong or too old: refused (403)."""


class PayloadError(ChannelError):
    """A signed webhook request whose body is not what the channel sends: refused (400)."""


class Overloaded(ChannelError):
    """The gateway has ``PARLEY_GATEWAY_MAX_IN_FLIGHT`` messages waiting for replies: a
    webhook message is refused (503) so that the channel retries it later."""


class SendError(ChannelError):
    """A reply the channel's API did not take (after retries).

    ``retryable``: the failure was the API's or the network's (5xx, 429, timeout), not
    the request's (a bad token, an unknown channel).
    """

    def __init__(self, channel: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(channel, reason)
        self.retryable = retryable
