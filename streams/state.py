"""Conversation state the bus and the gateway share in Redis Cluster: inbound
sequence numbers and the reply outbox.

A gateway numbers each inbound message (:meth:`ConversationStore.next_inbound_seqs`)
and replays replies a client missed from the outbox (:meth:`ConversationStore.replies_after`).
The dialogue step owns the rest of a conversation's state, its session, and writes
the outbox (agents/dialogue/sessions.py); both use the key layout of
:mod:`streams.keys` and :func:`on_each_primary`, which runs a Lua script once per
primary for a whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from streams.keys import ConversationKeys
from streams.security import RedisCredentials, process_redis_credentials

__all__ = ["KEEP_TTL_LUA", "MESSAGE_IDS_KEPT", "REDIS_UNAVAILABLE", "ConversationStore", "Numbered",
           "connect_cluster", "on_each_primary"]

logger = logging.getLogger(__name__)

# Every batch operation on conversation state is one Lua call per Redis primary, for all
# the batch's conversations that primary serves (on_each_primary). A cluster pipeline
# sends a command per conversation instead, and the client's cost per command was most of
# what a batch paid for Redis: for 64 conversations (load, apply, mark produced, number),
# 7.0 ms of the client's CPU against 2.8 now, and on the primaries 2.7 against 2.0-2.4
# (docs/benchmarks.md). The scripts take their keys in ARGV and are flagged
# allow-cross-slot-keys, which lets a script touch keys of several slots of the node it
# runs on (Redis >= 7.0, Valkey); the node refuses keys it does not serve.

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

#: Lua: ``keep(key, ttl)`` renews ``key``'s TTL to ``ttl`` seconds when it has none, when
#: more than ``ttl`` is left (the retention was shortened), or when it has run down by more
#: than a tenth of ``ttl`` (at most an hour); returns whether it did. A conversation's keys
#: are written at every message, and renewing every one of them at every write cost 9
#: EXPIREs a message, each of them replicated (docs/benchmarks.md). A key now lives
#: between ``ttl`` less that slack and ``ttl`` after its conversation's last write.
KEEP_TTL_LUA = """
local function keep(key, ttl)
  local left = redis.call('TTL', key)
  if left >= 0 and left <= ttl and left >= ttl - math.min(3600, math.floor(ttl / 10)) then
    return false
  end
  redis.call('EXPIRE', key, ttl)
  return true
end
"""

# Per message: its seq key, its conversation's message-id hash, the client's message id
# ("" for none), the event id it gets if new, and the conversation's retention and owner
# keys. A message id seen before returns the seq and event id it got then, and takes no
# number. The hash is bounded: past ARGV[2] ids it starts anew (a resend comes within
# moments of its first try). A new message keeps the conversation's keys alive for the TTL
# its retention key holds (ARGV[1] when it has none): they live on while it is in use.
_NUMBER_MESSAGES = "#!lua flags=allow-cross-slot-keys" + KEEP_TTL_LUA + """
local out = {}
for i = 3, #ARGV, 6 do
  local seq_key, ids, id, event = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local seen = false
  if id ~= '' then seen = redis.call('HGET', ids, id) end
  if seen then
    local at = string.find(seen, ':', 1, true)
    out[#out + 1] = tonumber(string.sub(seen, 1, at - 1))
    out[#out + 1] = string.sub(seen, at + 1)
  else
    local ttl = tonumber(redis.call('GET', ARGV[i + 4]) or ARGV[1])
    local seq = redis.call('INCR', seq_key)
    if keep(seq_key, ttl) then  -- the retention and owner records are renewed with it
      redis.call('EXPIRE', ARGV[i + 4], ttl)
      redis.call('EXPIRE', ARGV[i + 5], ttl)
    end
    if id ~= '' then
      if redis.call('HLEN', ids) >= tonumber(ARGV[2]) then redis.call('DEL', ids) end
      redis.call('HSET', ids, id, seq .. ':' .. event)
      keep(ids, ttl)
    end
    out[#out + 1] = seq
    out[#out + 1] = ''
  end
end
return out
"""

#: How many client message ids of a conversation are remembered for spotting resends.
MESSAGE_IDS_KEPT = 256


@dataclass(frozen=True, slots=True)
class Numbered:
    """A message's sequence number; ``first_event_id`` is set when the client sent this
    message id before (a resend): the number and event id are the first try's."""

    seq: int
    first_event_id: str = ""


#: What the cluster client raises when Redis cannot answer (``RedisClusterException``,
#: e.g. "cannot be connected" after its retries, is not a ``RedisError``).
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def connect_cluster(nodes: Sequence[tuple[str, int]], *, max_connections: int = 64,
                    fail_fast: bool = False,
                    credentials: RedisCredentials | None = None) -> RedisCluster:
    """A cluster client authenticating as ``credentials`` (None: as this process does,
    from ``PARLEY_REDIS_USERNAME``/``_PASSWORD`` or the data dir: streams/security.py);
    nodes beyond the startup ones are discovered.

    By default a call rides out a failover: on a timeout the client retries and
    rediscovers the cluster, which during a full outage takes about half a minute
    before it raises. ``fail_fast`` (the gateway's choice, with a user waiting for an
    answer either way) gives up after one second.
    """
    timeout = 1 if fail_fast else 5
    credentials = credentials or process_redis_credentials()
    return RedisCluster(
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0) if fail_fast else None,
    )


class ConversationStore:
    """A conversation's inbound numbering and its reply outbox, as the gateway uses them."""

    def __init__(self, redis: RedisCluster, *, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def replies_after(
        self, keys: ConversationKeys, seq: int, limit: int = 500
    ) -> list[bytes]:
        """Replies with a sequence number above ``seq``, oldest first (for resume)."""
        found = await self.redis.zrangebyscore(keys.outbox, f"({seq}", "+inf", start=0, num=limit)
        return cast(list[bytes], found)

    async def next_inbound_seqs(self, conversations: Sequence[ConversationKeys]) -> list[int]:
        """The next inbound sequence number of each conversation, in order: a conversation
        named twice gets two consecutive numbers. A new counter lives as long as a session.
        Raises the first primary's error when any primary fails."""
        seqs = await on_each_primary(self.redis, _NEXT_SEQS, [
            (keys.inbound_seq, (keys.inbound_seq,)) for keys in conversations
        ], shared=(self.ttl_s,))  # fmt: skip
        return [int(seq) for seq in seqs]

    async def number_messages_settled(
        self, messages: Sequence[tuple[ConversationKeys, str, str]]
    ) -> list[Numbered | Exception]:
        """For each ``(conversation, client message id, event id)``: the next inbound
        sequence number, or what a resend of that message id got the first time (an empty
        id: always a new number). A message whose primary failed gets that primary's error
        in its place, and the others their numbers: a shard that is down refuses only the
        conversations whose keys it serves."""
        flat = await on_each_primary(self.redis, _NUMBER_MESSAGES, [
            (keys.inbound_seq, (keys.inbound_seq, keys.message_ids, message_id, event_id,
                                keys.retention, keys.owner))
            for keys, message_id, event_id in messages
        ], shared=(self.ttl_s, MESSAGE_IDS_KEPT), per_call=2, settle=True)  # fmt: skip
        return [pair if isinstance(pair, Exception)
                else Numbered(int(pair[0]), _text(pair[1])) for pair in flat]

    async def forget_message(self, keys: ConversationKeys, message_id: str) -> None:
        """Forget a message id whose event never reached the broker, so that the client's
        retry is taken as new (best effort: Redis down, the retry is acked as a resend)."""
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await self.redis.hdel(keys.message_ids, message_id)

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


async def on_each_primary(redis: RedisCluster, script: str,
                          calls: Sequence[tuple[str, Sequence[Any]]], *,
                          shared: Sequence[Any] = (), per_call: int = 1,
                          settle: bool = False) -> list[Any]:
    """Run ``script`` once on each primary, with ``shared`` and then the arguments of
    every call whose key (the first item of the call) that primary serves, in order.
    Returns the script's results, ``per_call`` items per call (one result, or a list
    of ``per_call`` when more), in the order of ``calls``.

    Calls to different primaries run concurrently; each is atomic. When one fails,
    the others may have run: every script here can be run again. By default the first
    failure is raised for the whole batch; with ``settle`` each call whose primary
    failed gets that primary's exception in its place instead, and the calls of the
    primaries that answered keep their results (a shard that is down then refuses
    only the keys it serves). A node that answers
    with an error (a replica since a failover: ``ReadOnlyError``) means that slots
    moved: the cluster's layout is read afresh before the error is raised, so that
    the caller's next try goes where the keys are now. After a connection error the
    client asks for that itself, and ``initialize()`` does it on the next call.
    """
    if not calls:
        return []
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
    failures = [r for r in replies if isinstance(r, BaseException)]
    if any(isinstance(f, ResponseError) for f in failures):
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await redis.nodes_manager.initialize()
    if failures and not settle:
        raise failures[0]
    for failure in failures:
        if not isinstance(failure, Exception):  # CancelledError, KeyboardInterrupt
            raise failure
    results: list[Any] = [None] * len(calls)
    for (_, indices, _), reply in zip(by_node.values(), replies, strict=True):
        if isinstance(reply, BaseException):
            for index in indices:
                results[index] = reply
            continue
        flat = cast(list[Any], reply)
        for n, index in enumerate(indices):
            results[index] = (flat[n] if per_call == 1
                              else flat[n * per_call:(n + 1) * per_call])
    return results
