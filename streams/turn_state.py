"""A turn's dialogue state on its reply, for bot testers only.

``parley test --url`` checks slots, the active flow and the requested slot against a
running stack (agents/dialogue/testcases.py). The dialogue step knows them after each
turn; the gateway shows them in the reply frame. Both sides meet here, in the layer
they share, so the role's name and the wire form are written once.

Who sees it: the slots are the conversation's own, but a bot builder's business (a
collected account number, an internal status), not every end user's. So the dialogue
step attaches the state only to the replies of a message whose sender's verified roles
(a JWT's ``roles`` claim, carried in every ChatMessage) include :data:`BOT_TESTER_ROLE`,
and the gateway shows it only on a connection that asked (``/ws?debug=1``) with
credentials holding that role. A normal user's turn pays one set lookup for it.

The state travels in BotReply's ``state_json`` as compact JSON text (slot values are
any JSON value, which an Avro record cannot type); empty means none.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["BOT_TESTER_ROLE", "is_bot_tester", "read_turn_state", "turn_state_json"]

#: The role that may see a turn's dialogue state (``parley token --role bot_tester``).
BOT_TESTER_ROLE = "bot_tester"


def is_bot_tester(roles: Collection[str]) -> bool:
    """Whether verified ``roles`` allow seeing the dialogue state."""
    return BOT_TESTER_ROLE in roles


def turn_state_json(slots: Mapping[str, Any], active_flow: str | None,
                    requested_slot: str | None) -> str:
    """The state after a turn as BotReply's ``state_json``: ``{"slots", "active_flow",
    "requested_slot"}`` (a slot value JSON cannot write is written as its text)."""
    return json.dumps({"slots": dict(slots), "active_flow": active_flow,
                       "requested_slot": requested_slot},
                      separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)


def read_turn_state(state_json: str) -> dict[str, Any] | None:
    """BotReply's ``state_json`` as the reply frame's ``state`` object; None when empty
    or not a JSON object (a reply is still delivered, without it)."""
    if not state_json:
        return None
    try:
        state = json.loads(state_json)
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None
