"""Per-conversation sequence numbers for accepted messages, asked of Redis in batches.

Every message the gateway accepts needs the next number of its conversation's
counter (a Redis ``INCR``, so it stays monotonic across gateways and reconnects).
One round trip per message cost ≈ 90 µs of the gateway's CPU, most of it system
calls, and under load the concurrent calls ran out of the cluster client's
connections (``MaxConnectionsError``: messages refused as "unavailable").

So at most one request is at Redis at a time. Messages that arrive meanwhile
wait and go together in the next, as one pipeline: a message on its own is
sent at once (no batching delay at light load), and the busier the gateway,
the larger the batches. Each waiter gets its number in the order it asked, so
two messages of one conversation are numbered in the order they came.
"""

from __future__ import annotations

import asyncio

from streams.keys import ConversationKeys
from streams.state import ConversationStore

__all__ = ["InboundSequences"]


class InboundSequences:
    def __init__(self, store: ConversationStore, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._waiting: list[tuple[ConversationKeys, asyncio.Future[int]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def next(self, keys: ConversationKeys) -> int:
        """The conversation's next number. Raises what the store raised for its batch
        (every message of a batch fails alike when Redis is unavailable)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        batch: list[tuple[ConversationKeys, asyncio.Future[int]]] = []
        try:
            while self._waiting:
                batch = self._waiting[:self._max_batch]
                del self._waiting[:self._max_batch]
                try:
                    seqs = await self._store.next_inbound_seqs([keys for keys, _ in batch])
                except Exception as exc:  # each caller handles it as it would its own call
                    for _, future in batch:
                        if not future.done():  # its message's socket may have gone
                            future.set_exception(exc)
                    continue
                for (_, future), seq in zip(batch, seqs, strict=True):
                    if not future.done():
                        future.set_result(seq)
            batch = []
        finally:  # cancelled (the gateway closing): nobody is left to answer the rest
            self._sending = None
            for _, future in (*batch, *self._waiting):
                future.cancel()
            self._waiting.clear()

    async def close(self) -> None:
        """Wait for the request at Redis, if any (bounded by the client's timeouts)."""
        if self._sending is not None:
            await asyncio.wait([self._sending])
