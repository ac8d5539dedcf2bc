"""Conversation ownership: a conversation belongs to the user who first used it.

Whoever knew a conversation id used to own it: another user connecting with it and
``last_seq=0`` received its replies and could write into it. Now the first
authenticated user to open a conversation becomes its owner, recorded atomically in
Redis next to the conversation's other keys (``parley:{tenant:conversation}:owner``,
streams/keys.py), and every later handshake by anyone else is refused (403) before the
socket exists: no replay, no resume, no live reply and no message can reach a socket
that was never opened. The key is per tenant, so a user of another tenant who picks the
same conversation id opens a different conversation altogether.

The owner record lives as long as the conversation's state (the tenant's retention,
else PARLEY_SESSION_TTL_S) and is refreshed on each connect by its owner.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio.cluster import RedisCluster

from gateway.auth import AuthError, Principal
from streams.keys import ConversationKeys

__all__ = ["Ownership"]

# KEYS[1]: the owner key; ARGV: user, ttl_s. SET NX (the first user wins), else compare;
# the owner's own connect refreshes the TTL. Returns the owner.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
if owner == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
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
        owner = await self._script(keys=[keys.owner],
                                   args=[principal.user_id, ttl_s or self._ttl_s])
        owner = cast(bytes | str, owner)
        if (owner.decode() if isinstance(owner, bytes) else owner) != principal.user_id:
            raise AuthError(403, "conversation belongs to another user")
