"""What a bot tester sees of a turn: its dialogue state, and each utterance of a reply.

``parley test --url`` checks slots, the active flow and the requested slot against a
running stack (agents/dialogue/testcases.py). The dialogue step knows them after each
turn; the gateway shows them in the reply frame. Both sides meet here, in the layer
they share, so the role's name and the wire form are written once.

Who sees it: the slots are the conversation's own, but a bot builder's business (a
collected account number, an internal status), not every end user's. So the dialogue
step attaches it only to the replies of a message whose sender's verified roles (a
JWT's ``roles`` claim, carried in every ChatMessage) include :data:`BOT_TESTER_ROLE`,
and the gateway shows it only on a connection that asked (``/ws?debug=1``) with
credentials holding that role. A normal user's turn pays one set lookup for it.

What it holds: ``state`` (``slots``, ``active_flow``, ``requested_slot``: the slots are
the state's after the turn plus those the turn set, which a flow that ended within it
may have let go, as the in-process test runner sees them) and ``utterances`` (each
``response`` and ``text`` a reply joins into one message: a reply names only its last
response). It travels in BotReply's ``debug_json`` as compact JSON text (slot values
are any JSON value, which an Avro record cannot type); empty means none.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BOT_TESTER_ROLE", "TurnDebug", "is_bot_tester", "read_turn_debug",
           "turn_debug_json"]

#: The role that may see a turn's dialogue state (``parley token --role bot_tester``).
BOT_TESTER_ROLE = "bot_tester"


def is_bot_tester(roles: Collection[str]) -> bool:
    """Whether verified ``roles`` allow seeing the dialogue state."""
    return BOT_TESTER_ROLE in roles


def turn_debug_json(slots: Mapping[str, Any], active_flow: str | None,
                    requested_slot: str | None,
                    utterances: Sequence[tuple[str, str]]) -> str:
    """BotReply's ``debug_json``: the state after the turn and the reply's
    ``(response, text)`` utterances (a slot value JSON cannot write is written as text)."""
    return json.dumps({
        "state": {"slots": dict(slots), "active_flow": active_flow,
                  "requested_slot": requested_slot},
        "utterances": [{"response": response, "text": text} for response, text in utterances],
    }, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class TurnDebug:
    """``debug_json`` read back: the reply frame's ``state`` and ``utterances``."""

    state: dict[str, Any]
    utterances: list[dict[str, Any]]


def read_turn_debug(debug_json: str) -> TurnDebug | None:
    """BotReply's ``debug_json``; None when empty or not the expected JSON (the reply is
    still delivered, without it)."""
    if not debug_json:
        return None
    try:
        debug = json.loads(debug_json)
    except json.JSONDecodeError:
        return None
    if not isinstance(debug, dict):
        return None
    state, utterances = debug.get("state"), debug.get("utterances", [])
    if not isinstance(state, dict) or not isinstance(utterances, list):
        return None
    return TurnDebug(state, [u for u in utterances if isinstance(u, dict)])
