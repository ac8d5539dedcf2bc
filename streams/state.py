"""Conversation state in Redis Cluster.

The store is batch-oriented: agents take events in batches and every method
here costs one cluster pipeline for the whole batch, whatever its size.

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
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from streams.keys import ConversationKeys

__all__ = ["REDIS_UNAVAILABLE", "AppliedTurn", "ConversationStore", "ProducedMarks", "Session",
           "connect_cluster"]

logger = logging.getLogger(__name__)

# KEYS: session, events, outbox
# ARGV: event_id, inbound_seq, now_ms, reply_seq, reply_bytes, turns, ttl_s, outbox_size
# An empty reply_bytes records a turn whose answer comes later (event -> 0, no outbox entry).
# Returns 1 when applied, 0 when the event was already recorded (nothing changed).
_APPLY_TURN = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1],
  'turns', ARGV[6], 'last_seq', ARGV[2], 'reply_seq', ARGV[4], 'updated_ms', ARGV[3])
redis.call('HSETNX', KEYS[1], 'created_ms', ARGV[3])
if ARGV[5] == '' then
  redis.call('HSET', KEYS[2], ARGV[1], 0)
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[8]) + 1))
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
return 1
"""


# KEYS: session, events
# ARGV: event ids
# Returns the session hash as a flat field/value list, and each event's recorded reply
# seq (nil when not recorded): one command where HGETALL + HMGET would be two.
_LOAD_CONVERSATION = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HMGET', KEYS[2], unpack(ARGV))}
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
        pipe = self.redis.pipeline()
        for keys, ids in by_conv.items():
            pipe.eval(_LOAD_CONVERSATION, 2, keys.session, keys.events, *ids)
        sessions: dict[ConversationKeys, Session] = {}
        seen: dict[str, int] = {}
        for (keys, ids), (fields, replies) in zip(by_conv.items(), await pipe.execute(),
                                                  strict=True):
            sessions[keys] = Session.from_fields(keys, fields)
            for event_id, reply_seq in zip(ids, replies, strict=True):
                if reply_seq is not None:
                    seen[event_id] = int(reply_seq)
        return sessions, seen

    async def apply(self, turns: Sequence[AppliedTurn]) -> list[bool]:
        """Record each turn atomically; False for a turn already recorded."""
        if not turns:
            return []
        now_ms = int(time.time() * 1000)
        pipe = self.redis.pipeline()
        for t in turns:
            k = t.keys
            pipe.eval(
                _APPLY_TURN, 3, k.session, k.events, k.outbox,
                t.event_id, t.inbound_seq, now_ms, t.reply_seq, t.reply, t.turns,
                self.ttl_s, self.outbox_size,
            )  # fmt: skip
        return [bool(r) for r in await pipe.execute()]

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
        if not produced:
            return
        pipe = self.redis.pipeline()
        for keys, seq in produced.items():
            pipe.hset(keys.session, "produced_seq", seq)
        await pipe.execute()

    async def replies_after(
        self, keys: ConversationKeys, seq: int, limit: int = 500
    ) -> list[bytes]:
        """Replies with a sequence number above ``seq``, oldest first (for resume)."""
        found = await self.redis.zrangebyscore(keys.outbox, f"({seq}", "+inf", start=0, num=limit)
        return cast(list[bytes], found)

    async def next_inbound_seqs(self, conversations: Sequence[ConversationKeys]) -> list[int]:
        """The next inbound sequence number of each conversation, in order: a conversation
        named twice gets two consecutive numbers. A new counter lives as long as a session."""
        if len(conversations) == 1:  # the cluster pipeline costs half as much again for one
            seqs = [await self.redis.incr(conversations[0].inbound_seq)]
        else:
            pipe = self.redis.pipeline()
            for keys in conversations:
                pipe.incr(keys.inbound_seq)
            seqs = await pipe.execute()
        started = [keys for keys, seq in zip(conversations, seqs, strict=True) if seq == 1]
        if started:
            pipe = self.redis.pipeline()
            for keys in started:
                pipe.expire(keys.inbound_seq, self.ttl_s)
            await pipe.execute()
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


class ProducedMarks:
    """``produced_seq`` writes (:meth:`ConversationStore.mark_produced`) kept off a batch's
    path: :meth:`record` returns at once, and a background task writes what was
    recorded, one pipeline at a time (what is recorded meanwhile goes in the next).

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
