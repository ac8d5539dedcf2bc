"""Conversation sessions, owned by the dialogue step: what Parley remembers between turns.

The store is batch-oriented: the conversation agent takes events in batches, and
what a batch does on every turn (load, apply, mark produced) costs one Lua call
per Redis primary for the whole batch, whatever its size
(:func:`streams.state.on_each_primary`).

Idempotency: each inbound ``event_id`` is recorded, with the sequence number of
the reply it produced, in the same Lua script that updates the session and
appends the reply to the outbox. A reprocessed event (a worker died after
producing, before committing its offsets) finds its record and is not applied
twice (the records come in two generations of :data:`EVENTS_KEPT`, so a long
conversation keeps its recent ones, not all). Replies are produced in ``seq``
order and ``produced_seq`` only moves after the broker confirmed them, so every
reply still owed after a crash is in the outbox range ``(produced_seq, reply_seq]``.
The range may also hold replies the broker did confirm, when the worker died
before :class:`ProducedMarks` wrote that down in the background; those are sent
again.

The gateway reads the same outbox to replay replies on resume, and numbers
inbound messages; that part of the key layout lives in :mod:`streams.state`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from redis.asyncio.cluster import RedisCluster

from streams.keys import ConversationKeys
from streams.state import KEEP_TTL_LUA, REDIS_UNAVAILABLE, on_each_primary

__all__ = ["EVENTS_KEPT", "AppliedTurn", "ProducedMarks", "Session", "SessionStore"]

logger = logging.getLogger(__name__)

#: Idempotency records a conversation keeps in one generation (it keeps two): an event is
#: reprocessed only from a batch whose offsets were not committed, moments after its first
#: time. Without a bound they grew by one a message for the conversation's whole
#: retention (48 MB for 400 conversations in a 10-minute benchmark).
EVENTS_KEPT = 1024

# ARGV: now_ms, ttl_s, outbox_size, events_kept, then per turn:
#   session, events, outbox, event_id, inbound_seq, reply_seq, reply_bytes, turns, dialogue,
#   retention, owner, events_before
# ttl_s is the deployment's retention: a conversation's keys are kept alive for the TTL its
# retention key holds, else ttl_s (streams/keys.py), the owner record with them
# (streams.state.KEEP_TTL_LUA says how often they are renewed).
# An empty reply_bytes records a turn that says nothing now (event -> 0, no outbox entry):
# its answer comes later (knowledge, an action), or never (a conversation handed over).
# ``dialogue`` is the dialogue state after the turn (agents/dialogue/state.py).
# The idempotency records come in two generations: once ``events`` holds events_kept, it
# becomes ``events_before`` (the older one goes) and a new one starts, so a conversation
# keeps its last events_kept to 2 x events_kept records, however long it runs.
# Returns per turn 1 when applied, 0 when the event was already recorded (nothing changed).
_APPLY_TURNS = "#!lua flags=allow-cross-slot-keys" + KEEP_TTL_LUA + """
local now, keep_replies, keep_events = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local applied = {}
for i = 5, #ARGV, 12 do
  local session, events, outbox, event_id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local reply_seq, reply = ARGV[i + 5], ARGV[i + 6]
  local retention, owner, before = ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  local ttl = tonumber(redis.call('GET', retention) or ARGV[2])
  if redis.call('HEXISTS', events, event_id) == 1
      or redis.call('HEXISTS', before, event_id) == 1 then
    applied[#applied + 1] = 0
  else
    redis.call('HSET', session, 'turns', ARGV[i + 7], 'last_seq', ARGV[i + 4],
      'reply_seq', reply_seq, 'updated_ms', now, 'dialogue', ARGV[i + 8])
    redis.call('HSETNX', session, 'created_ms', now)
    if reply == '' then
      redis.call('HSET', events, event_id, 0)
    else
      redis.call('HSET', events, event_id, reply_seq)
      redis.call('ZADD', outbox, reply_seq, reply)
      redis.call('ZREMRANGEBYRANK', outbox, 0, -(keep_replies + 1))
    end
    if redis.call('HLEN', events) >= keep_events then  -- a new generation (TTL kept)
      redis.call('RENAME', events, before)
    end
    if keep(session, ttl) then  -- the conversation's other keys are renewed with it
      redis.call('EXPIRE', events, ttl)
      redis.call('EXPIRE', before, ttl)
      redis.call('EXPIRE', outbox, ttl)
      redis.call('EXPIRE', retention, ttl)
      redis.call('EXPIRE', owner, ttl)
    else  -- written now, maybe new
      keep(events, ttl)
      if reply ~= '' then keep(outbox, ttl) end
    end
    applied[#applied + 1] = 1
  end
end
return applied
"""

# ARGV per conversation: session, events, events_before, the number of event ids n, then
# the n ids. Returns per conversation the session hash as a flat field/value list, and each
# event's recorded reply seq from either generation (nil when not recorded).
_LOAD_CONVERSATIONS = """#!lua flags=allow-cross-slot-keys
local loaded = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  local seqs = redis.call('HMGET', ARGV[i + 1], unpack(ARGV, i + 4, i + 3 + n))
  local older = redis.call('HMGET', ARGV[i + 2], unpack(ARGV, i + 4, i + 3 + n))
  for j = 1, n do
    if not seqs[j] then seqs[j] = older[j] end
  end
  loaded[#loaded + 1] = {redis.call('HGETALL', ARGV[i]), seqs}
  i = i + 4 + n
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

@dataclass(slots=True)
class Session:
    """What Parley remembers about one conversation between turns: the bus's counters,
    and ``dialogue``, the dialogue state record (:class:`agents.dialogue.state.DialogueState`
    as bytes; empty before the first turn)."""

    keys: ConversationKeys
    turns: int = 0
    last_seq: int = 0
    reply_seq: int = 0
    produced_seq: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    dialogue: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, keys: ConversationKeys, raw: dict[bytes, bytes]) -> Session:
        dialogue = raw.pop(b"dialogue", b"")
        values = {k.decode(): v.decode() for k, v in raw.items()}
        ints = {name: int(values.pop(name, 0)) for name in _INT_FIELDS}
        return cls(keys, dialogue=dialogue, extra=values, **ints)

    @classmethod
    def from_fields(cls, keys: ConversationKeys, flat: list[bytes]) -> Session:
        """From HGETALL's reply inside a script: field, value, field, value, ..."""
        return cls.from_hash(keys, dict(zip(flat[::2], flat[1::2], strict=True)))


_INT_FIELDS = ("turns", "last_seq", "reply_seq", "produced_seq", "created_ms", "updated_ms")


@dataclass(frozen=True, slots=True)
class AppliedTurn:
    """One turn to record: the event, the session after it, the encoded reply (empty
    when the turn says nothing now) and the dialogue state after it."""

    keys: ConversationKeys
    event_id: str
    inbound_seq: int
    reply_seq: int
    reply: bytes
    turns: int
    dialogue: bytes


class SessionStore:
    """Sessions, idempotency records and the outbox's writes, for batches of turns."""

    def __init__(self, redis: RedisCluster, *, ttl_s: int, outbox_size: int,
                 events_kept: int = EVENTS_KEPT) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.outbox_size = outbox_size
        self.events_kept = events_kept

    async def load(
        self, events: Sequence[tuple[ConversationKeys, str]]
    ) -> tuple[dict[ConversationKeys, Session], dict[str, int]]:
        """Sessions of the conversations in ``events`` and the reply seq of every
        ``(conversation, event_id)`` already recorded (reprocessed events)."""
        by_conv: dict[ConversationKeys, list[str]] = {}
        for keys, event_id in events:
            by_conv.setdefault(keys, []).append(event_id)
        loaded = await on_each_primary(self.redis, _LOAD_CONVERSATIONS, [
            (keys.session, (keys.session, keys.events, keys.events_before, len(ids), *ids))
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
        applied = await on_each_primary(self.redis, _APPLY_TURNS, [
            (t.keys.session, (t.keys.session, t.keys.events, t.keys.outbox, t.event_id,
                              t.inbound_seq, t.reply_seq, t.reply, t.turns, t.dialogue,
                              t.keys.retention, t.keys.owner, t.keys.events_before))
            for t in turns
        ], shared=(int(time.time() * 1000), self.ttl_s, self.outbox_size,
                   self.events_kept))  # fmt: skip
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
        await on_each_primary(self.redis, _MARK_PRODUCED, [
            (keys.session, (keys.session, seq)) for keys, seq in produced.items()])


class ProducedMarks:
    """``produced_seq`` writes (:meth:`SessionStore.mark_produced`) kept off a batch's
    path: :meth:`record` returns at once, and a background task writes what was
    recorded, one write at a time (what is recorded meanwhile goes in the next).

    Until a write is done, this object knows how far each conversation's replies
    went: take :meth:`pending` before loading sessions and :meth:`apply` it after, so
    they do not owe replies that are already on the broker. A failed write is kept
    and tried again at the next :meth:`record`. Only what the process dies with is
    lost, and then those replies are sent again (at least once), never lost: the
    outbox still holds them.
    """

    def __init__(self, store: SessionStore) -> None:
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
