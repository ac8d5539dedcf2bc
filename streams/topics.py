"""The topics of the bus: names, partitioning, retention, compression and replication.

``schemas/`` holds the contract of each topic's values; this module holds how
the topics are laid out (read from ``streams/topics.toml``, the one topic
configuration every deployment shares), and the envelope every conversation
event carries.
Everything about one conversation is keyed by its id.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from kernel.errors import SchemaError

__all__ = ["ACTIONS_REQUESTS", "ACTIONS_RESULTS", "BOTS", "BUSINESS_EVENTS", "CHAT_INBOUND",
           "CHAT_OUTBOUND", "CHAT_UNDERSTOOD", "CONVERSATION_NOTICES", "ENVELOPE_FIELDS",
           "HANDOFF_EVENTS", "KB_DOCUMENTS", "KNOWLEDGE_REQUESTS", "KNOWLEDGE_RESULTS",
           "TopicDefaults", "TopicSpec", "all_topics",
           "bots_max_message_bytes", "chat_partitions", "dlq_of", "producer_compression"]

CHAT_INBOUND = "chat.inbound"
CHAT_UNDERSTOOD = "chat.understood"
CHAT_OUTBOUND = "chat.outbound"
KB_DOCUMENTS = "kb.documents"
KNOWLEDGE_REQUESTS = "knowledge.requests"
KNOWLEDGE_RESULTS = "knowledge.results"
ACTIONS_REQUESTS = "actions.requests"
ACTIONS_RESULTS = "actions.results"
BOTS = "bots"
HANDOFF_EVENTS = "handoff.events"
#: Callbacks and business events for one conversation (streams/proactive.py).
CONVERSATION_NOTICES = "conversation.notices"
#: Business systems' events about a tenant's customers, keyed ``tenant/customer``.
BUSINESS_EVENTS = "business.events"

#: The fields every conversation event (chat_message, chat_understood, bot_reply,
#: knowledge_request, knowledge_result, action_request, action_result) carries besides its
#: payload. An event made from another copies them and replaces what differs (a reply's
#: event_id, seq, timestamp).
ENVELOPE_FIELDS = ("event_id", "tenant_id", "conversation_id", "user_id", "channel", "seq",
                   "timestamp", "trace_id", "reply_route")


_CONFIG_FILE = Path(__file__).with_name("topics.toml")


@dataclass(frozen=True)
class TopicDefaults:
    """Replication, retention and compression of every topic (``[defaults]`` and
    ``[replication]`` of ``streams/topics.toml``)."""

    retention_ms: int
    retention_bytes: int
    compression: str
    replication_factor: int
    min_insync_replicas: int

    @classmethod
    def load(cls) -> TopicDefaults:
        return _load_config()[0]

    def for_brokers(self, brokers: int) -> TopicDefaults:
        """These defaults on a cluster of ``brokers``: full replication only where the
        cluster has the brokers for it, else one copy."""
        if brokers >= self.replication_factor:
            return self
        return replace(self, replication_factor=1, min_insync_replicas=1)


@dataclass(frozen=True)
class TopicSpec:
    """One topic as Parley creates it."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None
    retention_bytes: int | None = None
    compression: str | None = None
    min_insync_replicas: int | None = None
    replication_factor: int = 1
    #: The largest record the topic takes (Kafka's ``max.message.bytes``); None: the broker's.
    max_message_bytes: int | None = None

    def config(self) -> dict[str, str]:
        """The topic-level configs to create it with (Kafka's names)."""
        config: dict[str, str] = {}
        if self.compacted:
            config["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        if self.retention_bytes is not None:
            config["retention.bytes"] = str(self.retention_bytes)
        if self.compression is not None:
            # the topic config names "no codec" differently from the clients
            config["compression.type"] = ("uncompressed" if self.compression == "none"
                                          else self.compression)
        if self.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(self.min_insync_replicas)
        if self.max_message_bytes is not None:
            config["max.message.bytes"] = str(self.max_message_bytes)
        return config


def dlq_of(topic: str) -> str:
    """The dead-letter topic for events a consumer of ``topic`` cannot decode or process."""
    return f"{topic}.dlq"


def _positive(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SchemaError(f"{_CONFIG_FILE}: [{where}] {key} must be a whole number >= 1, "
                          f"got {value!r}")
    return value


@lru_cache(maxsize=1)
def _load_config() -> tuple[TopicDefaults, dict[str, Any]]:
    try:
        raw = tomllib.loads(_CONFIG_FILE.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SchemaError(f"cannot read the topic configuration {_CONFIG_FILE}: {exc}") from exc
    defaults, replication = raw.get("defaults", {}), raw.get("replication", {})
    compression = defaults.get("compression")
    if compression not in _COMPRESSIONS:
        raise SchemaError(f"{_CONFIG_FILE}: [defaults] compression must be one of "
                          f"{', '.join(sorted(_COMPRESSIONS))}, got {compression!r}")
    topic_defaults = TopicDefaults(
        retention_ms=_positive(defaults, "retention_ms", "defaults"),
        retention_bytes=_positive(defaults, "retention_bytes", "defaults"),
        compression=compression,
        replication_factor=_positive(replication, "factor", "replication"),
        min_insync_replicas=_positive(replication, "min_insync_replicas", "replication"),
    )
    if topic_defaults.min_insync_replicas > topic_defaults.replication_factor:
        raise SchemaError(f"{_CONFIG_FILE}: [replication] min_insync_replicas cannot exceed "
                          "factor")
    for section in ("conversation", "dead_letters", "compacted", "bots"):
        _positive(raw.get(section, {}), "partitions", section)
    _positive(raw["bots"], "max_message_bytes", "bots")
    return topic_defaults, raw


#: Codecs every client here writes (librdkafka, and aiokafka with cramjam).
_COMPRESSIONS = frozenset({"none", "gzip", "snappy", "lz4", "zstd"})


def chat_partitions(override: int = 0) -> int:
    """Partitions of the conversation-keyed topics: ``override`` if given, else the file's."""
    return override or int(_load_config()[1]["conversation"]["partitions"])


def bots_max_message_bytes() -> int:
    """The largest record the ``bots`` topic takes: a whole published bot version."""
    return int(_load_config()[1]["bots"]["max_message_bytes"])


def producer_compression() -> str:
    """The codec producers use: the topics' own, so the broker stores batches as sent
    (librdkafka's name: ``none`` for no codec; aiokafka takes None for it)."""
    return TopicDefaults.load().compression


def all_topics(chat_partitions_override: int = 0, prefix: str = "",
               brokers: int = 1) -> list[TopicSpec]:
    """Every topic Parley creates, as ``streams/topics.toml`` lays them out for a cluster
    of ``brokers``; ``chat_partitions_override`` (when not 0) replaces the conversation
    topics' partition count."""
    defaults, raw = _load_config()
    defaults = defaults.for_brokers(brokers)
    common: dict[str, Any] = {
        "compression": defaults.compression,
        "min_insync_replicas": defaults.min_insync_replicas,
        "replication_factor": defaults.replication_factor,
    }
    conversation, dead, compacted = raw["conversation"], raw["dead_letters"], raw["compacted"]
    bots = raw["bots"]
    partitions = chat_partitions(chat_partitions_override)
    specs = [TopicSpec(prefix + name, partitions, retention_ms=defaults.retention_ms,
                       retention_bytes=defaults.retention_bytes, **common)
             for name in conversation["topics"]]
    specs += [TopicSpec(prefix + dlq_of(name), dead["partitions"],
                        retention_ms=dead.get("retention_ms", defaults.retention_ms),
                        retention_bytes=defaults.retention_bytes, **common)
              for name in dead["of"]]
    specs += [TopicSpec(prefix + name, compacted["partitions"], compacted=True, **common)
              for name in compacted["topics"]]
    specs += [TopicSpec(prefix + name, bots["partitions"], compacted=True,
                        max_message_bytes=bots["max_message_bytes"], **common)
              for name in bots["topics"]]
    return specs
