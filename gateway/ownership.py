"""Conversation ownership: a conversation belongs to the user who first used it.

Whoever knew a conversation id used to own it: another user connecting with it and
``last_seq=0`` received its replies and could write into it. Now the first
authenticated user to open a conversation becomes its owner, recorded atomically in
Redis next to the conversation's other keys (``parley:{tenant:conversation}:owner``,
streams/keys.py), and every later handshake by anyone else is refused (403) before the
socket exists: no replay, no resume, no live reply and no message can reach a socket
that was never opened. The key is per tenant, so a user of another tenant who picks the
same conversation id opens a different conversation altogether.

The owner record lives as long as the conversation's state: the owner's connect writes
the tenant's retention next to it (``...:retention``, else PARLEY_SESSION_TTL_S), and
every write to the conversation (a numbered message, a recorded turn) gives all its keys,
the owner's too, that TTL again (streams/keys.py). A conversation that has state but no
owner is refused to everyone: a webhook channel's conversation (Slack, SMS: nobody opens
those over ``/ws``), or one whose owner record is gone while its replies are not.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio.cluster import RedisCluster

from gateway.auth import AuthError, Principal
from streams.keys import ConversationKeys

__all__ = ["Ownership"]

# KEYS: owner, retention, then the keys that hold a conversation's state (inbound seq,
# session, outbox); ARGV: user, ttl_s. The first user of a conversation with no state
# becomes its owner; state without an owner is nobody's to take (returns ""). The owner's
# own connect writes the retention again. Returns the owner.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if not owner then
  if redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[5]) > 0 then return '' end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[2])
  return ARGV[1]
end
if owner == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[2])
end
return owner
"""


class Ownership:
    """Claims conversations for users and refuses those of others."""

    def __init__(self, redis: RedisCluster, *, ttl_s: int) -> None:
        self._script = redis.register_script(_CLAIM)
        self._ttl_s = ttl_s

    async def claim(self, keys: ConversationKeys, principal: Principal,
                    ttl_s: int | None = None) -> None:
        """Make ``principal`` the owner of a new conversation, or check it owns this one.

        Raises :class:`AuthError` (403) for a conversation of another user; what Redis
        raises when it cannot answer (the caller refuses the handshake with 503)."""
        if keys.tenant_id != principal.tenant_id:  # ConversationKeys are built per tenant
            raise AuthError(403, "conversation belongs to another tenant")
        owner = await self._script(
            keys=[keys.owner, keys.retention, keys.inbound_seq, keys.session, keys.outbox],
            args=[principal.user_id, ttl_s or self._ttl_s])
        owner = cast(bytes | str, owner)
        if (owner.decode() if isinstance(owner, bytes) else owner) != principal.user_id:
            raise AuthError(403, "conversation belongs to another user")
