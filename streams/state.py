"""Conversation state in Redis Cluster.

The store is batch-oriented: agents take events in batches, and what a batch
does on every turn (load, apply, mark produced, number inbound messages) costs
one Lua call per primary for the whole batch, whatever its size.

Idempotency: each inbound ``event_id`` is recorded, with the sequence number of
the reply it produced, in the same Lua script that updates the session and
appends the reply to the outbox. A reprocessed event (a worker died after
producing, before committing its offsets) finds its record and is not applied
twice. Replies are produced in ``seq`` order and ``produced_seq`` only moves
after the broker confirmed them, so every reply still owed after a crash is
in the outbox range ``(produced_seq, reply_seq]``. The range may also hold
replies the broker did confirm, when the worker died before
:class:`ProducedMarks` wrote that down in the background; those are sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from streams.keys import ConversationKeys

__all__ = ["REDIS_UNAVAILABLE", "AppliedTurn", "ConversationStore", "ProducedMarks", "Session",
           "connect_cluster"]

logger = logging.getLogger(__name__)

# Every batch operation below is one Lua call per Redis primary, for all the batch's
# conversations that primary serves (ConversationStore._on_each_node). A cluster pipeline
# sends a command per conversation instead, and the client's cost per command was most of
# what a batch paid for Redis: for 64 conversations (load, apply, mark produced, number),
# 7.0 ms of the client's CPU against 2.8 now, and on the primaries 2.7 against 2.0-2.4
# (docs/benchmarks.md). The scripts take their keys in ARGV and are flagged
# allow-cross-slot-keys, which lets a script touch keys of several slots of the node it
# runs on (Redis >= 7.0, Valkey); the node refuses keys it does not serve.

# ARGV: now_ms, ttl_s, outbox_size, then per turn:
#   session, events, outbox, event_id, inbound_seq, reply_seq, reply_bytes, turns
# An empty reply_bytes records a turn whose answer comes later (event -> 0, no outbox entry).
# Returns per turn 1 when applied, 0 when the event was already recorded (nothing changed).
_APPLY_TURNS = """#!lua flags=allow-cross-slot-keys
local now, ttl, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
local applied = {}
for i = 4, #ARGV, 8 do
  local session, events, outbox, event_id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local reply_seq, reply = ARGV[i + 5], ARGV[i + 6]
  if redis.call('HEXISTS', events, event_id) == 1 then
    applied[#applied + 1] = 0
  else
    redis.call('HSET', session, 'turns', ARGV[i + 7], 'last_seq', ARGV[i + 4],
      'reply_seq', reply_seq, 'updated_ms', now)
    redis.call('HSETNX', session, 'created_ms', now)
    if reply == '' then
      redis.call('HSET', events, event_id, 0)
    else
      redis.call('HSET', events, event_id, reply_seq)
      redis.call('ZADD', outbox, reply_seq, reply)
      redis.call('ZREMRANGEBYRANK', outbox, 0, -(keep + 1))
    end
    redis.call('EXPIRE', session, ttl)
    redis.call('EXPIRE', events, ttl)
    redis.call('EXPIRE', outbox, ttl)
    applied[#applied + 1] = 1
  end
end
return applied
"""

# ARGV per conversation: session, events, the number of event ids n, then the n ids.
# Returns per conversation the session hash as a flat field/value list, and each event's
# recorded reply seq (nil when not recorded).
_LOAD_CONVERSATIONS = """#!lua flags=allow-cross-slot-keys
local loaded = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  loaded[#loaded + 1] = {redis.call('HGETALL', ARGV[i]),
                         redis.call('HMGET', ARGV[i + 1], unpack(ARGV, i + 3, i + 2 + n))}
  i = i + 3 + n
end
return loaded
"""

# ARGV per conversation: session, produced_seq. Returns a 1 per conversation.
_MARK_PRODUCED = """#!lua flags=allow-cross-slot-keys
local marked = {}
for i = 1, #ARGV, 2 do
  redis.call('HSET', ARGV[i], 'produced_seq', ARGV[i + 1])
  marked[#marked + 1] = 1
end
return marked
"""

# ARGV: ttl_s, then one counter per message. Returns each counter's new value; a new
# counter gets the TTL.
_NEXT_SEQS = """#!lua flags=allow-cross-slot-keys
local seqs = {}
for i = 2, #ARGV do
  local seq = redis.call('INCR', ARGV[i])
  if seq == 1 then redis.call('EXPIRE', ARGV[i], ARGV[1]) end
  seqs[#seqs + 1] = seq
end
return seqs
"""


@dataclass(slots=True)
class Session:
    """What Parley remembers about one conversation between turns."""

    keys: ConversationKeys
    turns: int = 0
    last_seq: int = 0
    reply_seq: int = 0
    produced_seq: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, keys: ConversationKeys, raw: dict[bytes, bytes]) -> Session:
        values = {k.decode(): v.decode() for k, v in raw.items()}
        ints = {name: int(values.pop(name, 0)) for name in _INT_FIELDS}
        return cls(keys, extra=values, **ints)

    @classmethod
    def from_fields(cls, keys: ConversationKeys, flat: list[bytes]) -> Session:
        """From HGETALL's reply inside a script: field, value, field, value, ..."""
        return cls.from_hash(keys, dict(zip(flat[::2], flat[1::2], strict=True)))


_INT_FIELDS = ("turns", "last_seq", "reply_seq", "produced_seq", "created_ms", "updated_ms")


@dataclass(frozen=True, slots=True)
class AppliedTurn:
    """One turn to record: the event, the session after it, and the encoded reply
    (empty when the reply comes later, e.g. from the knowledge agent)."""

    keys: ConversationKeys
    event_id: str
    inbound_seq: int
    reply_seq: int
    reply: bytes
    turns: int


#: What the cluster client raises when Redis cannot answer (``RedisClusterException``,
#: e.g. "cannot be connected" after its retries, is not a ``RedisError``).
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def connect_cluster(nodes: Sequence[tuple[str, int]], *, max_connections: int = 64,
                    fail_fast: bool = False) -> RedisCluster:
    """A cluster client; nodes beyond the startup ones are discovered.

    By default a call rides out a failover: on a timeout the client retries and
    rediscovers the cluster, which during a full outage takes about half a minute
    before it raises. ``fail_fast`` (the gateway's choice, with a user waiting for an
    answer either way) gives up after one second.
    """
    timeout = 1 if fail_fast else 5
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0) if fail_fast else None,
    )


class ConversationStore:
    def __init__(self, redis: RedisCluster, *, ttl_s: int, outbox_size: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.outbox_size = outbox_size

    async def load(
        self, events: Sequence[tuple[ConversationKeys, str]]
    ) -> tuple[dict[ConversationKeys, Session], dict[str, int]]:
        """Sessions of the conversations in ``events`` and the reply seq of every
        ``(conversation, event_id)`` already recorded (reprocessed events)."""
        by_conv: dict[ConversationKeys, list[str]] = {}
        for keys, event_id in events:
            by_conv.setdefault(keys, []).append(event_id)
        loaded = await self._on_each_node(_LOAD_CONVERSATIONS, [
            (keys.session, (keys.session, keys.events, len(ids), *ids))
            for keys, ids in by_conv.items()
        ])  # fmt: skip
        sessions: dict[ConversationKeys, Session] = {}
        seen: dict[str, int] = {}
        for (keys, ids), (fields, replies) in zip(by_conv.items(), loaded, strict=True):
            sessions[keys] = Session.from_fields(keys, fields)
            for event_id, reply_seq in zip(ids, replies, strict=True):
                if reply_seq is not None:
                    seen[event_id] = int(reply_seq)
        return sessions, seen

    async def apply(self, turns: Sequence[AppliedTurn]) -> list[bool]:
        """Record each turn atomically; False for a turn already recorded."""
        applied = await self._on_each_node(_APPLY_TURNS, [
            (t.keys.session, (t.keys.session, t.keys.events, t.keys.outbox, t.event_id,
                              t.inbound_seq, t.reply_seq, t.reply, t.turns))
            for t in turns
        ], shared=(int(time.time() * 1000), self.ttl_s, self.outbox_size))  # fmt: skip
        return [bool(r) for r in applied]

    async def unproduced(
        self, sessions: Iterable[Session]
    ) -> list[tuple[ConversationKeys, int, bytes]]:
        """Replies recorded but not confirmed on the broker (a worker died in between),
        as ``(conversation, seq, reply)`` in seq order per conversation."""
        owing = [s for s in sessions if s.reply_seq > s.produced_seq]
        if not owing:
            return []
        pipe = self.redis.pipeline()
        for s in owing:
            pipe.zrangebyscore(s.keys.outbox, f"({s.produced_seq}", s.reply_seq, withscores=True)
        found = await pipe.execute()
        return [(s.keys, int(seq), reply)
                for s, entries in zip(owing, found, strict=True) for reply, seq in entries]

    async def mark_produced(self, produced: dict[ConversationKeys, int]) -> None:
        """Record that replies up to ``seq`` are on the broker, per conversation."""
        await self._on_each_node(_MARK_PRODUCED, [
            (keys.session, (keys.session, seq)) for keys, seq in produced.items()])

    async def replies_after(
        self, keys: ConversationKeys, seq: int, limit: int = 500
    ) -> list[bytes]:
        """Replies with a sequence number above ``seq``, oldest first (for resume)."""
        found = await self.redis.zrangebyscore(keys.outbox, f"({seq}", "+inf", start=0, num=limit)
        return cast(list[bytes], found)

    async def next_inbound_seqs(self, conversations: Sequence[ConversationKeys]) -> list[int]:
        """The next inbound sequence number of each conversation, in order: a conversation
        named twice gets two consecutive numbers. A new counter lives as long as a session."""
        seqs = await self._on_each_node(_NEXT_SEQS, [
            (keys.inbound_seq, (keys.inbound_seq,)) for keys in conversations
        ], shared=(self.ttl_s,))  # fmt: skip
        return [int(seq) for seq in seqs]

    async def erase(self, conversations: Iterable[ConversationKeys]) -> int:
        """Delete every key of the given conversations; returns keys removed."""
        removed = 0
        for keys in conversations:
            removed += await self.redis.delete(*keys.all())
        return removed

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), timeout=2))
        except REDIS_UNAVAILABLE as exc:  # asyncio.wait_for raises TimeoutError, an OSError
            logger.warning("redis.ping.failed error=%r", exc)
            return False

    async def _on_each_node(self, script: str, calls: Sequence[tuple[str, Sequence[Any]]], *,
                            shared: Sequence[Any] = ()) -> list[Any]:
        """Run ``script`` once on each primary, with ``shared`` and then the arguments of
        every call whose key (the first item of the call) that primary serves, in order.
        Returns the script's results, one per call, in the order of ``calls``.

        Calls to different primaries run concurrently; each is atomic. When one fails,
        the others may have run: every script here can be run again. A node that answers
        with an error (a replica since a failover: ``ReadOnlyError``) means that slots
        moved: the cluster's layout is read afresh before the error is raised, so that
        the caller's next try goes where the keys are now. After a connection error the
        client asks for that itself, and ``initialize()`` does it on the next call.
        """
        if not calls:
            return []
        redis = self.redis
        await redis.initialize()  # the layout, on first use
        by_node: dict[str, tuple[ClusterNode, list[int], list[Any]]] = {}
        for index, (key, args) in enumerate(calls):
            # The primary; SlotNotCoveredError when none serves the slot.
            node = redis.nodes_manager.get_node_from_slot(redis.keyslot(key))
            if (on_node := by_node.get(node.name)) is None:
                on_node = by_node[node.name] = (node, [], [*shared])
            on_node[1].append(index)
            on_node[2].extend(args)
        replies = await asyncio.gather(*(
            redis.execute_command("EVAL", script, 0, *args, target_nodes=node)
            for node, _, args in by_node.values()
        ), return_exceptions=True)  # fmt: skip
        if failed := next((r for r in replies if isinstance(r, BaseException)), None):
            if isinstance(failed, ResponseError):
                with contextlib.suppress(*REDIS_UNAVAILABLE):
                    await redis.nodes_manager.initialize()
            raise failed
        results: list[Any] = [None] * len(calls)
        for (_, indices, _), reply in zip(by_node.values(), replies, strict=True):
            for index, result in zip(indices, cast(list[Any], reply), strict=True):
                results[index] = result
        return results


class ProducedMarks:
    """``produced_seq`` writes (:meth:`ConversationStore.mark_produced`) kept off a batch's
    path: :meth:`record` returns at once, and a background task writes what was
    recorded, one write at a time (what is recorded meanwhile goes in the next).

    Until a write is done, this object knows how far each conversation's replies
    went: take :meth:`pending` before loading sessions and :meth:`apply` it after, so
    they do not owe replies that are already on the broker. A failed write is kept
    and tried again at the next :meth:`record`. Only what the process dies with is
    lost, and then those replies are sent again (at least once), never lost: the
    outbox still holds them.
    """

    def __init__(self, store: ConversationStore) -> None:
        self._store = store
        self._unwritten: dict[ConversationKeys, int] = {}
        self._writing: asyncio.Task[None] | None = None

    def pending(self) -> dict[ConversationKeys, int]:
        """What is recorded but not yet written, by conversation: a copy."""
        return dict(self._unwritten)

    @staticmethod
    def apply(pending: dict[ConversationKeys, int],
              sessions: dict[ConversationKeys, Session]) -> None:
        """Raise the ``produced_seq`` of sessions loaded since :meth:`pending` was taken."""
        for keys, session in sessions.items():
            if (seq := pending.get(keys, 0)) > session.produced_seq:
                session.produced_seq = seq

    def record(self, produced: Iterable[tuple[ConversationKeys, int]]) -> None:
        """Replies up to ``seq`` are on the broker: write it, in the background."""
        unwritten = self._unwritten
        for keys, seq in produced:
            if seq > unwritten.get(keys, 0):
                unwritten[keys] = seq
        if unwritten and self._writing is None:
            self._writing = asyncio.create_task(self._write())

    async def written(self) -> None:
        """Wait until the background writes are done (a failure is logged and kept)."""
        if self._writing is not None:
            await asyncio.shield(self._writing)

    async def _write(self) -> None:
        unwritten = self._unwritten
        try:
            while unwritten:
                marks = dict(unwritten)
                await self._store.mark_produced(marks)
                for keys, seq in marks.items():
                    if unwritten.get(keys) == seq:
                        del unwritten[keys]
        except REDIS_UNAVAILABLE as exc:
            # Kept in _unwritten: the next record() writes them again.
            logger.warning("state.produced.mark_failed conversations=%d error=%r",
                           len(unwritten), exc)
        finally:
            self._writing = None
