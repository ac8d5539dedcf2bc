"""Human handoff's shared state in Redis Cluster: a tenant's waiting queue, who holds
which conversation, and what a person taking one over needs to see.

Two sides use it and may not import each other: the conversation agent puts a
conversation in the queue when a turn hands it over and adds the user's messages to
its transcript (agents/dialogue/handoff.py); the agent console's API claims, answers,
releases and closes (gateway/handoff_desk.py). So the layout and the atomic scripts
live here, below both.

Every key is hash-tagged by tenant, so the whole of one tenant's handoff state lives in
one slot and a claim (out of the queue, into the held table) is one atomic script with
its keys declared (two agents claiming one conversation: one wins)::

    parley:{t1}:handoff:waiting          zset  conversation -> requested at (ms)
    parley:{t1}:handoff:deadlines        zset  conversation -> expires at (ms), while waiting
    parley:{t1}:handoff:held             hash  conversation -> agent id
    parley:{t1}:handoff:conv:c42         hash  request_id, user_id, channel, reason,
                                               slots_json, requested_ms, agent_id, claimed_ms
    parley:{t1}:handoff:transcript:c42   zset  ms -> JSON line {id, role, text, agent_id, at}
    parley:handoff:tenants               set   tenants that had a request (the expiry sweep)

A tenant's keys never name another tenant's conversations: every operation takes the
tenant id and only ever builds that tenant's keys (tenant isolation by construction).
The transcript is bounded (``transcript_size`` lines) and everything expires with the
conversation's TTL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from streams.keys import PREFIX, validate_id

__all__ = ["HANDOFF_TYPES", "RELAYED", "Claimed", "HandoffKeys", "HandoffRecord", "HandoffStore",
           "TranscriptLine", "handoff_event"]

#: The ``response`` of the empty reply a message relayed to a person gets: it releases the
#: gateway's in-flight count; pages show it as a receipt, channels post nothing.
RELAYED = "handoff_relayed"

#: The ``type`` of a HandoffEvent (schemas/handoff_event.avsc).
HANDOFF_TYPES = frozenset({"requested", "claimed", "agent_message", "note", "released",
                           "closed", "expired", "user_message"})

_TENANTS = f"{PREFIX}:handoff:tenants"


@dataclass(frozen=True, slots=True)
class HandoffKeys:
    """The handoff keys of one tenant (all in one slot)."""

    tenant_id: str

    def __post_init__(self) -> None:
        validate_id("tenant id", self.tenant_id)

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.tenant_id}}}:handoff"

    @property
    def waiting(self) -> str:
        return f"{self.tag}:waiting"

    @property
    def deadlines(self) -> str:
        return f"{self.tag}:deadlines"

    @property
    def held(self) -> str:
        return f"{self.tag}:held"

    def record(self, conversation_id: str) -> str:
        return f"{self.tag}:conv:{validate_id('conversation id', conversation_id)}"

    def transcript(self, conversation_id: str) -> str:
        return f"{self.tag}:transcript:{validate_id('conversation id', conversation_id)}"


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line of what a person taking a conversation over reads: ``role`` is ``user``,
    ``bot``, ``agent`` or ``note``; ``id`` makes a repeated write a no-op."""

    id: str
    role: str
    text: str
    at_ms: int
    agent_id: str = ""

    def member(self) -> str:
        return json.dumps({"id": self.id, "role": self.role, "text": self.text,
                           "agent_id": self.agent_id, "at": self.at_ms},
                          separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_member(cls, raw: bytes | str) -> TranscriptLine:
        data = json.loads(raw)
        return cls(str(data["id"]), str(data["role"]), str(data["text"]), int(data["at"]),
                   str(data.get("agent_id", "")))


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """A conversation in a tenant's queue (``agent_id`` empty) or held by an agent."""

    conversation_id: str
    request_id: str
    user_id: str
    channel: str
    reason: str
    slots: Mapping[str, Any]
    requested_ms: int
    agent_id: str = ""
    claimed_ms: int = 0
    transcript: tuple[TranscriptLine, ...] = ()

    @classmethod
    def from_hash(cls, conversation_id: str, raw: Mapping[bytes, bytes],
                  transcript: Sequence[bytes] = ()) -> HandoffRecord:
        values = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            slots = json.loads(values.get("slots_json", "{}"))
        except json.JSONDecodeError:
            slots = {}
        return cls(conversation_id, values.get("request_id", ""), values.get("user_id", ""),
                   values.get("channel", ""), values.get("reason", ""),
                   slots if isinstance(slots, dict) else {},
                   int(values.get("requested_ms", 0) or 0), values.get("agent_id", ""),
                   int(values.get("claimed_ms", 0) or 0),
                   tuple(TranscriptLine.from_member(m) for m in transcript))


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a successful claim took: the request's record as it stands now."""

    record: HandoffRecord


# KEYS: waiting, deadlines, held, record, transcript
# ARGV: conversation, request_id, now_ms, deadline_ms, user_id, channel, reason, slots_json,
#       ttl_s, keep, then (score, member) per transcript line.
# Returns 1 when queued, 0 when this request was queued before (a repeated turn).
_ENQUEUE = """
local conv, request = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[4], 'request_id') == request then return 0 end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HSET', KEYS[4], 'request_id', request, 'user_id', ARGV[5], 'channel', ARGV[6],
  'reason', ARGV[7], 'slots_json', ARGV[8], 'requested_ms', ARGV[3])
redis.call('HDEL', KEYS[3], conv)
redis.call('ZADD', KEYS[1], ARGV[3], conv)
redis.call('ZADD', KEYS[2], ARGV[4], conv)
for i = 11, #ARGV, 2 do redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i + 1]) end
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[10]) + 1))
redis.call('EXPIRE', KEYS[4], ARGV[9])
redis.call('EXPIRE', KEYS[5], ARGV[9])
return 1
"""

# KEYS: transcript, record. ARGV: ttl_s, keep, then (score, member) pairs.
_APPEND = """
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: waiting, deadlines, held, record. ARGV: conversation, agent, now_ms.
# Returns 1 when this agent now holds it, 0 when it is not waiting (claimed by someone
# else, released, expired, never asked for).
_CLAIM = """
local conv = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], conv) then return 0 end
redis.call('ZREM', KEYS[1], conv)
redis.call('ZREM', KEYS[2], conv)
redis.call('HSET', KEYS[3], conv, ARGV[2])
redis.call('HSET', KEYS[4], 'agent_id', ARGV[2], 'claimed_ms', ARGV[3])
return 1
"""

# KEYS: waiting, deadlines, held, record. ARGV: conversation, agent, requested_ms, deadline.
# Undoes a claim whose command could not be published: back in the queue.
_UNCLAIM = """
local conv = ARGV[1]
if redis.call('HGET', KEYS[3], conv) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], conv)
redis.call('HDEL', KEYS[4], 'agent_id', 'claimed_ms')
redis.call('ZADD', KEYS[1], ARGV[3], conv)
redis.call('ZADD', KEYS[2], ARGV[4], conv)
return 1
"""

# KEYS: held, record. ARGV: conversation, agent. Ends the agent's hold (release, close).
# Returns 1, or 0 when this agent does not hold the conversation.
_LET_GO = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'agent_id', '')
return 1
"""

# KEYS: waiting, deadlines, record. ARGV: conversation, request_id.
# A request still waiting for this request id leaves the queue: 1; else (claimed
# meanwhile, another request) 0.
_EXPIRE = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[3], 'request_id') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


class HandoffStore:
    """The handoff state of every tenant (see the module docstring for the layout).

    ``ttl_s``: how long a request's record and transcript live (the session TTL);
    ``transcript_size``: the most lines kept per conversation.
    """

    def __init__(self, redis: RedisCluster, *, ttl_s: int, transcript_size: int = 200) -> None:
        self.redis = redis
        # redis-py's stubs type replies as bytes | str | ...: this client returns bytes.
        self._r: Any = redis
        # Script objects: EVALSHA, loaded again on NOSCRIPT; keys declared, so the client
        # routes each call to the tenant's slot and the server checks it.
        self._enqueue = redis.register_script(_ENQUEUE)
        self._append = redis.register_script(_APPEND)
        self._claim = redis.register_script(_CLAIM)
        self._unclaim = redis.register_script(_UNCLAIM)
        self._let_go = redis.register_script(_LET_GO)
        self._expire = redis.register_script(_EXPIRE)
        self.ttl_s = ttl_s
        self.transcript_size = transcript_size

    # -- the conversation agent's side ------------------------------------------------

    async def enqueue(self, tenant_id: str, record: HandoffRecord, deadline_ms: int) -> bool:
        """Put a request in its tenant's queue, with the transcript so far (it replaces an
        earlier request's); False when this request (``record.request_id``) was queued
        before."""
        keys, conv = HandoffKeys(tenant_id), record.conversation_id
        lines = [x for line in record.transcript for x in (line.at_ms, line.member())]
        slots = json.dumps(dict(record.slots), separators=(",", ":"), default=str)
        queued = await self._enqueue(
            keys=[keys.waiting, keys.deadlines, keys.held, keys.record(conv),
                  keys.transcript(conv)],
            args=[conv, record.request_id, record.requested_ms, deadline_ms, record.user_id,
                  record.channel, record.reason, slots, self.ttl_s, self.transcript_size,
                  *lines])
        await self._r.sadd(_TENANTS, tenant_id)
        return bool(queued)

    async def append(self, tenant_id: str, conversation_id: str,
                     lines: Sequence[TranscriptLine]) -> None:
        """Add lines to a conversation's transcript (a line already there is not repeated)."""
        if not lines:
            return
        keys = HandoffKeys(tenant_id)
        await self._append(
            keys=[keys.transcript(conversation_id), keys.record(conversation_id)],
            args=[self.ttl_s, self.transcript_size,
                  *[x for line in lines for x in (line.at_ms, line.member())]])

    async def expire_due(self, now_ms: int | None = None,
                         limit: int = 100) -> list[tuple[str, HandoffRecord]]:
        """Take every request whose deadline passed without a claim out of its queue,
        atomically per request (a claim at the same moment wins or loses as a whole);
        returns ``(tenant, record)`` of those taken, for the caller to announce."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        expired: list[tuple[str, HandoffRecord]] = []
        for raw in await self._r.smembers(_TENANTS):
            tenant = raw.decode()
            keys = HandoffKeys(tenant)
            due = await self._r.zrangebyscore(keys.deadlines, "-inf", now_ms, start=0,
                                                 num=limit)
            for conv_raw in due:
                conv = conv_raw.decode()
                record = await self.record(tenant, conv)
                if record is None:  # its record expired with the session: drop it
                    await self._r.zrem(keys.deadlines, conv)
                    await self._r.zrem(keys.waiting, conv)
                    continue
                taken = await self._expire(
                    keys=[keys.waiting, keys.deadlines, keys.record(conv)],
                    args=[conv, record.request_id])
                if taken:
                    expired.append((tenant, record))
        return expired

    # -- the console's side -----------------------------------------------------------

    async def record(self, tenant_id: str, conversation_id: str,
                     transcript: bool = False) -> HandoffRecord | None:
        """One conversation's request, or None when the tenant has none for it."""
        keys = HandoffKeys(tenant_id)
        raw = await self._r.hgetall(keys.record(conversation_id))
        if not raw:
            return None
        lines = await self._r.zrange(keys.transcript(conversation_id), 0, -1) \
            if transcript else []
        return HandoffRecord.from_hash(conversation_id, raw, lines)

    async def waiting(self, tenant_id: str) -> list[str]:
        """The tenant's waiting conversations, longest-waiting first."""
        found = await self._r.zrange(HandoffKeys(tenant_id).waiting, 0, -1)
        return [c.decode() for c in found]

    async def held(self, tenant_id: str) -> dict[str, str]:
        """The tenant's held conversations: conversation → agent id."""
        found = await self._r.hgetall(HandoffKeys(tenant_id).held)
        return {k.decode(): v.decode() for k, v in found.items()}

    async def holder(self, tenant_id: str, conversation_id: str) -> str:
        """Who holds the conversation ('' when nobody does)."""
        validate_id("conversation id", conversation_id)
        found = await self._r.hget(HandoffKeys(tenant_id).held,
                                      conversation_id)
        return found.decode() if found else ""

    async def claim(self, tenant_id: str, conversation_id: str, agent_id: str,
                    now_ms: int) -> Claimed | None:
        """Atomically take a waiting conversation for ``agent_id``; None when it is not
        waiting (another agent was first, or there is no such request for this tenant)."""
        keys = HandoffKeys(tenant_id)
        won = await self._claim(
            keys=[keys.waiting, keys.deadlines, keys.held, keys.record(conversation_id)],
            args=[conversation_id, agent_id, now_ms])
        if not won:
            return None
        record = await self.record(tenant_id, conversation_id, transcript=True)
        return None if record is None else Claimed(record)

    async def unclaim(self, tenant_id: str, record: HandoffRecord, agent_id: str,
                      deadline_ms: int) -> None:
        """Put a claimed conversation back in the queue (its command was not published)."""
        keys = HandoffKeys(tenant_id)
        await self._unclaim(
            keys=[keys.waiting, keys.deadlines, keys.held, keys.record(record.conversation_id)],
            args=[record.conversation_id, agent_id, record.requested_ms, deadline_ms])

    async def forget(self, tenant_id: str, conversation_id: str) -> None:
        """Drop a conversation from the queue and the held table (its record expired with
        the session: nothing is left to act on)."""
        keys = HandoffKeys(tenant_id)
        validate_id("conversation id", conversation_id)
        await self._r.zrem(keys.waiting, conversation_id)
        await self._r.zrem(keys.deadlines, conversation_id)
        await self._r.hdel(keys.held, conversation_id)

    async def let_go(self, tenant_id: str, conversation_id: str, agent_id: str) -> bool:
        """End ``agent_id``'s hold of the conversation (release or close); False when
        that agent does not hold it."""
        keys = HandoffKeys(tenant_id)
        done = await self._let_go(keys=[keys.held, keys.record(conversation_id)],
                                  args=[conversation_id, agent_id])
        return bool(done)


def handoff_event(event_id: str, tenant_id: str, conversation_id: str, type_: str, *,
                  timestamp_ms: int, request_id: str = "", user_id: str = "",
                  agent_id: str = "", text: str = "", reason: str = "",
                  slots: Mapping[str, Any] | None = None, channel: str = "",
                  in_reply_to: str = "") -> dict[str, Any]:
    """A HandoffEvent record (schemas/handoff_event.avsc)."""
    if type_ not in HANDOFF_TYPES:
        raise ValueError(f"unknown handoff event type {type_!r}")
    return {"event_id": event_id, "tenant_id": tenant_id, "conversation_id": conversation_id,
            "user_id": user_id, "type": type_, "request_id": request_id, "agent_id": agent_id,
            "text": text, "reason": reason,
            "slots_json": json.dumps(dict(slots or {}), separators=(",", ":"), default=str),
            "channel": channel, "in_reply_to": in_reply_to, "timestamp": timestamp_ms}

