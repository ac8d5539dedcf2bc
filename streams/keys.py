"""Redis key layout for conversation state.

Every key of one conversation shares the hash tag ``{tenant:conversation}``, so
all of them live in one cluster slot and can be changed atomically by one Lua
script::

    parley:{t1:c42}:session     hash    turns, last_seq, reply_seq, produced_seq, timestamps
    parley:{t1:c42}:events      hash    inbound event_id -> reply seq (idempotency record)
    parley:{t1:c42}:events:before  hash  the generation of those records before it
    parley:{t1:c42}:outbox      zset    reply seq -> encoded BotReply (for resume)
    parley:{t1:c42}:inseq       string  last inbound sequence number assigned by a gateway
    parley:{t1:c42}:llm_usage   hash    LLM tokens and calls spent on the conversation
    parley:{t1:c42}:owner       string  the user the conversation belongs to (gateway/ownership.py)
    parley:{t1:c42}:retention   string  seconds its state is kept after its last activity (the
                                        tenant's retention when it was opened)

The retention key is what makes retention per tenant without any writer knowing the
tenant's configuration: the gateway writes it when the owner opens the conversation, and
every script that writes the conversation's keys reads it from the same slot and gives
them that TTL (the deployment's ``PARLEY_SESSION_TTL_S`` when there is none), so the
keys of one conversation expire together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kernel.errors import ParleyError

__all__ = ["ConversationKeys", "InvalidIdError", "validate_id"]

PREFIX = "parley"
_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")


class InvalidIdError(ParleyError, ValueError):
    """A tenant, user or conversation id that cannot be used in keys and topics.

    Also a ``ValueError``: callers that refuse bad input by catching that keep doing so.
    """

    def __init__(self, kind: str, value: str) -> None:
        super().__init__(kind, value)
        self.kind, self.value = kind, value

    def __str__(self) -> str:
        return (f"invalid {self.kind} {self.value[:40]!r}: "
                "use 1-128 characters from A-Z a-z 0-9 . _ @ -")


def validate_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a usable id: 1-128 of ``A-Z a-z 0-9 . _ @ -``."""
    if not _ID.fullmatch(value):
        raise InvalidIdError(kind, value)
    return value


@dataclass(frozen=True, slots=True)
class ConversationKeys:
    tenant_id: str
    conversation_id: str

    def __post_init__(self) -> None:
        validate_id("tenant id", self.tenant_id)
        validate_id("conversation id", self.conversation_id)

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.tenant_id}:{self.conversation_id}}}"

    @property
    def session(self) -> str:
        return f"{self.tag}:session"

    @property
    def events(self) -> str:
        return f"{self.tag}:events"

    @property
    def events_before(self) -> str:
        """The idempotency records' previous generation (agents/dialogue/sessions.py)."""
        return f"{self.tag}:events:before"

    @property
    def outbox(self) -> str:
        return f"{self.tag}:outbox"

    @property
    def inbound_seq(self) -> str:
        return f"{self.tag}:inseq"

    @property
    def llm_usage(self) -> str:
        return f"{self.tag}:llm_usage"

    @property
    def owner(self) -> str:
        return f"{self.tag}:owner"

    @property
    def retention(self) -> str:
        return f"{self.tag}:retention"

    @property
    def message_ids(self) -> str:
        """The client's ids of the conversation's recent messages → ``seq:event_id``."""
        return f"{self.tag}:msgids"

    @property
    def choices(self) -> str:
        """The choices a webhook channel last offered (gateway/channels/ingress.py)."""
        return f"{self.tag}:choices"

    def all(self) -> tuple[str, ...]:
        return (self.session, self.events, self.events_before, self.outbox, self.inbound_seq,
                self.llm_usage, self.owner, self.retention, self.message_ids, self.choices)
