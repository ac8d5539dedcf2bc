"""Errors of the actions component (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                      (kernel/errors.py)
    └── ActionError
        ├── ActionDefinitionError    an action registered wrongly (its name, types or function)
        └── ActionFailed             raised by an action: the business call did not succeed
            └── ActionUnavailable    the business system could not be reached (kind unavailable)
                └── ActionOutcomeUnknown  a write went out, no answer came (kind unknown)

Nothing a request brings raises out of the registry: an unknown action, inputs
or outputs of the wrong shape, an exception or a timeout all become a failed
:class:`~agents.actions.registry.ActionOutcome`. ``ActionDefinitionError`` is
raised at start-up, where a registration is wrong.
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = ["ActionDefinitionError", "ActionError", "ActionFailed", "ActionOutcomeUnknown",
           "ActionUnavailable"]


class ActionError(ParleyError):
    """Base class of the actions component's errors."""


class ActionDefinitionError(ActionError):
    """An action registered wrongly: the message names the action and what is wrong."""

    def __init__(self, action: str, problem: str) -> None:
        super().__init__(action, problem)
        self.action, self.problem = action, problem

    def __str__(self) -> str:
        return f"action {self.action!r}: {self.problem}"


class ActionFailed(ActionError):
    """Raised by an action whose business call did not succeed (a ticket system that said
    no, an unknown order): the result is a failure carrying this message, kind ``failed``.
    Any other exception does the same; this one keeps the message free of a class name."""


class ActionUnavailable(ActionFailed):
    """Raised by an action whose business system could not be reached: down, too slow,
    answering 5xx, or its circuit breaker open. The result's kind is ``unavailable``, so a
    flow can say "I can't reach your account right now" (``on_unavailable``) rather than
    "that order does not exist"."""


class ActionOutcomeUnknown(ActionUnavailable):
    """Raised by an action whose write went out and got no answer (the answer timed out,
    the connection broke after the request was sent): the business system may have done
    it. The result's kind is ``unknown``, so a flow never says "nothing was done" about a
    transfer that may have gone through (``on_unknown``: "I couldn't confirm it; check
    before you try again"). It is an :class:`ActionUnavailable` too: the breaker counts
    it, and an idempotent write is retried under the same idempotency key."""
