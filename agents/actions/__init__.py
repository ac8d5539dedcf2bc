"""Actions: named, typed calls to business systems that flows make off the hot path.

The public surface (docs/actions.md). The Faust agent that serves
``actions.requests`` is :func:`agents.actions.agent.register_action_agent`; it is
not imported here, so a tool that only registers or describes actions does not
load Faust.
"""

from __future__ import annotations

from agents.actions.errors import (
    ActionDefinitionError,
    ActionError,
    ActionFailed,
    ActionOutcomeUnknown,
    ActionUnavailable,
)
from agents.actions.records import (
    action_request,
    action_result,
    read_result,
    request_event_id,
    result_event_id,
)
from agents.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    ActionRegistry,
    FailureKind,
)
from agents.actions.settings import ActionSettings

__all__ = [
    "ActionContext",
    "ActionDefinition",
    "ActionDefinitionError",
    "ActionError",
    "ActionFailed",
    "ActionOutcome",
    "ActionOutcomeUnknown",
    "ActionRegistry",
    "ActionSettings",
    "ActionUnavailable",
    "FailureKind",
    "action_request",
    "action_result",
    "read_result",
    "request_event_id",
    "result_event_id",
]
