"""The topics of the bus: names, partitioning and retention.

``schemas/`` holds the contract of each topic's values; this module holds how
the topics are laid out, and the envelope every conversation event carries.
Everything about one conversation is keyed by its id.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHAT_INBOUND", "CHAT_OUTBOUND", "CHAT_UNDERSTOOD", "ENVELOPE_FIELDS",
           "KB_DOCUMENTS", "KNOWLEDGE_REQUESTS", "KNOWLEDGE_RESULTS", "TopicSpec", "all_topics",
           "dlq_of"]

CHAT_INBOUND = "chat.inbound"
CHAT_UNDERSTOOD = "chat.understood"
CHAT_OUTBOUND = "chat.outbound"
KB_DOCUMENTS = "kb.documents"
KNOWLEDGE_REQUESTS = "knowledge.requests"
KNOWLEDGE_RESULTS = "knowledge.results"

#: The fields every conversation event (chat_message, chat_understood, bot_reply,
#: knowledge_request, knowledge_result) carries besides its payload. An event made from
#: another copies them and replaces what differs (a reply's event_id, seq, timestamp).
ENVELOPE_FIELDS = ("event_id", "tenant_id", "conversation_id", "user_id", "channel", "seq",
                   "timestamp", "trace_id", "reply_route")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False

    def config(self) -> dict[str, str]:
        return {"cleanup.policy": "compact"} if self.compacted else {}


def dlq_of(topic: str) -> str:
    """The dead-letter topic for events a consumer of ``topic`` cannot decode or process."""
    return f"{topic}.dlq"


def all_topics(chat_partitions: int, prefix: str = "") -> list[TopicSpec]:
    """Every topic Parley creates, with its partition count."""
    # Keyed by conversation and co-partitioned: the conversation agent reads chat.inbound
    # and knowledge.results, and must own both topics' partition N of a conversation.
    chat = [CHAT_INBOUND, CHAT_UNDERSTOOD, CHAT_OUTBOUND, KNOWLEDGE_REQUESTS, KNOWLEDGE_RESULTS]
    specs = [TopicSpec(prefix + name, chat_partitions) for name in chat]
    specs += [TopicSpec(prefix + dlq_of(name), 1)
              for name in (CHAT_INBOUND, KNOWLEDGE_REQUESTS, KNOWLEDGE_RESULTS)]
    specs.append(TopicSpec(prefix + KB_DOCUMENTS, 1, compacted=True))
    return specs
