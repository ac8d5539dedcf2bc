"""What the dialogue step decides for a batch, without I/O.

:func:`decide_turns` takes a batch's decoded events and the sessions loaded for
them and returns, for each new event in order, the conversation's session after
it and the event it sends: a BotReply, or a KnowledgeRequest when the policy
hands the message to the knowledge agent and no cached answer replaces it. A
knowledge agent's answer (a KnowledgeResult) becomes the reply it carries. The
step (agents/dialogue/agent.py) loads, encodes, produces and records around it.
At debug level each decision is logged with its message's trace id
(``dialogue.turn.decided``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from agents.dialogue.policy import AskKnowledge, Decision, ReplyContent, RuleBasedPolicy
from agents.dialogue.sessions import Session
from streams.keys import ConversationKeys
from streams.topics import ENVELOPE_FIELDS

__all__ = ["Incoming", "Turn", "decide_turns", "question_event", "reply_event", "reply_payload"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One event of the dialogue step's input: a ChatUnderstood or a KnowledgeResult."""

    keys: ConversationKeys
    msg: dict[str, Any]
    is_result: bool  # a knowledge answer (knowledge.results) rather than a user message


class Turn(NamedTuple):
    """A new event's outcome: its conversation's session after it, and what it sends."""

    keys: ConversationKeys
    event_id: str
    session: Session
    reply: dict[str, Any] | None     # a BotReply, numbered session.reply_seq
    question: dict[str, Any] | None  # or a KnowledgeRequest, answered by a later reply


def decide_turns(
    batch: Sequence[Incoming],
    sessions: Mapping[ConversationKeys, Session],
    seen: Container[str],
    cached: Mapping[str, ReplyContent],
    policy: RuleBasedPolicy,
) -> list[Turn]:
    """Decide each new event of ``batch`` in order, carrying sessions forward.

    ``sessions`` holds every conversation of the batch as loaded (it is not
    changed); ``seen`` the event ids already recorded, which are skipped, as is an
    event repeated within the batch; ``cached`` the cached answers to the batch's
    knowledge questions, by event id.
    """
    current = dict(sessions)
    debug = logger.isEnabledFor(logging.DEBUG)
    turns: list[Turn] = []
    decided: set[str] = set()  # a reprocessed event may also repeat within one batch
    for item in batch:
        keys, msg, event_id = item.keys, item.msg, item.msg["event_id"]
        session = current[keys]
        if event_id in decided or event_id in seen:
            continue
        decided.add(event_id)
        # the session after the turn is made in one copy: a user message counts a turn
        counted, last_seq = session.turns, session.last_seq
        if item.is_result:
            decision: Decision = ReplyContent(msg["payload"]["text"],
                                              sources=tuple(msg["payload"]["sources"]))
        else:
            decision = policy.respond(session, msg)
            counted, last_seq = counted + 1, msg["seq"]
            if isinstance(decision, AskKnowledge) and (hit := cached.get(event_id)):
                decision = hit
        if isinstance(decision, AskKnowledge):
            session = replace(session, turns=counted, last_seq=last_seq)
            turn = Turn(keys, event_id, session, None, question_event(msg, decision))
        else:
            session = replace(session, turns=counted, last_seq=last_seq,
                              reply_seq=session.reply_seq + 1)
            turn = Turn(keys, event_id, session, reply_event(msg, session.reply_seq, decision),
                        None)
        current[keys] = session
        turns.append(turn)
        if debug:
            logger.debug("dialogue.turn.decided event_id=%s sends=%s reply_seq=%d", event_id,
                         "reply" if turn.reply else "question", session.reply_seq,
                         extra={"trace_id": msg["trace_id"]})
    return turns


def question_event(msg: dict[str, Any], ask: AskKnowledge) -> dict[str, Any]:
    """The KnowledgeRequest for a user message (ChatUnderstood) the policy hands on."""
    return {
        **{k: msg[k] for k in ENVELOPE_FIELDS},
        "payload": {"question": ask.question, "client_msg_id": msg["payload"]["client_msg_id"],
                    "filters": {}},
    }


def reply_event(msg: dict[str, Any], seq: int, content: ReplyContent) -> dict[str, Any]:
    """The BotReply for a user message, or for a knowledge answer to one."""
    payload = msg["payload"]
    return {
        **{k: msg[k] for k in ENVELOPE_FIELDS},
        "event_id": f"{msg['event_id']}.r",
        "seq": seq,
        "timestamp": int(time.time() * 1000),
        "payload": reply_payload(content, payload.get("in_reply_to") or msg["event_id"],
                                 payload["client_msg_id"]),
    }


def reply_payload(content: ReplyContent, in_reply_to: str, client_msg_id: str) -> dict[str, Any]:
    """A BotReply's payload: what the bot says, in reply to which message."""
    return {
        "text": content.text,
        "in_reply_to": in_reply_to,
        "client_msg_id": client_msg_id,
        "quick_replies": list(content.quick_replies),
        "sources": list(content.sources),
        "sender": "bot",
    }
