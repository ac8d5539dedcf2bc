"""The dialogue agent: ``chat.understood`` → session update → ``chat.outbound``.

Per batch (one Redis pipeline per step, whatever the batch size):

1. load the sessions of the batch's conversations and the idempotency records
   of its event ids;
2. decide each reply in order, carrying session changes forward within the batch;
3. record every new turn atomically (session + idempotency record + outbox);
4. produce the replies and wait until the broker holds them;
5. move each conversation's ``produced_seq`` forward.

A reprocessed event (the worker died before its offsets were committed) is
found in step 1: if its reply was confirmed produced it is skipped, otherwise
the stored reply is produced again with its original ``seq`` and ``event_id``
(gateways write a ``seq`` once per socket, so a user never sees it twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from faust.types import EventT

from agents.dialogue.policy import ReplyContent, RuleBasedPolicy
from parley.errors import DecodeError
from streams.app import WorkerContext, send_to_dlq
from streams.keys import ConversationKeys
from streams.state import AppliedTurn

__all__ = ["register_dialogue_agent"]

logger = logging.getLogger(__name__)

_ENVELOPE = ("tenant_id", "conversation_id", "user_id", "channel", "trace_id", "reply_route")


def register_dialogue_agent(ctx: WorkerContext, policy: RuleBasedPolicy) -> None:
    understood_codec = ctx.codec("chat_understood", ctx.understood)
    reply_codec = ctx.codec("bot_reply", ctx.outbound)
    settings = ctx.settings
    store = ctx.store

    @ctx.app.agent(ctx.understood, name=f"{settings.topic_prefix}dialogue")
    async def dialogue(stream: Any) -> None:  # faust.Stream; StreamT lacks take_events
        async for events in stream.take_events(settings.worker_batch_size,
                                               settings.worker_batch_wait):
            await _process(events)

    async def _process(events: Sequence[EventT]) -> None:
        batch: list[tuple[ConversationKeys, dict[str, Any]]] = []
        for event in events:
            try:
                msg = understood_codec.decode(event.message.value)
                batch.append((ConversationKeys(msg["tenant_id"], msg["conversation_id"]), msg))
            except (DecodeError, ValueError) as exc:
                await send_to_dlq(ctx.understood_dlq, event, exc)
        if not batch:
            return

        sessions, seen = await store.load([(k, m["event_id"]) for k, m in batch])
        if seen:
            logger.info("dialogue.events.reprocessed count=%d", len(seen))
        new_turns: list[AppliedTurn] = []
        resend: list[tuple[ConversationKeys, int]] = []
        decided: set[str] = set()  # a reprocessed event may also repeat within one batch
        for keys, msg in batch:
            session = sessions[keys]
            if msg["event_id"] in decided:
                continue
            decided.add(msg["event_id"])
            if msg["event_id"] in seen:
                reply_seq = seen[msg["event_id"]]
                if reply_seq > session.produced_seq:
                    resend.append((keys, reply_seq))
                continue
            content = policy.respond(session, msg)
            sessions[keys] = session = replace(
                session, turns=session.turns + 1, last_seq=msg["seq"],
                reply_seq=session.reply_seq + 1,
            )  # fmt: skip
            value = reply_codec.encode(_reply(msg, session.reply_seq, content))
            new_turns.append(AppliedTurn(keys, msg["event_id"], msg["seq"], session.reply_seq,
                                         value, session.turns))

        applied = await store.apply(new_turns)
        to_send: list[tuple[ConversationKeys, int, bytes]] = []
        if resend:  # older than this batch's replies, so they go first
            stored = await store.outbox_entries(resend)
            to_send += [(k, s, v) for (k, s), v in zip(resend, stored, strict=True) if v]
            logger.info("dialogue.replies.resent count=%d", len(resend))
        to_send += [(t.keys, t.reply_seq, t.reply)
                    for t, ok in zip(new_turns, applied, strict=True) if ok]
        futures = [
            await ctx.outbound.send(key=keys.conversation_id.encode(), value=value)
            for keys, _, value in to_send
        ]
        await asyncio.gather(*futures)
        produced: dict[ConversationKeys, int] = {}
        for keys, seq, _ in to_send:
            produced[keys] = max(seq, produced.get(keys, 0))
        await store.mark_produced(produced)


def _reply(msg: dict[str, Any], seq: int, content: ReplyContent) -> dict[str, Any]:
    payload = msg["payload"]
    return {
        **{k: msg[k] for k in _ENVELOPE},
        "event_id": f"{msg['event_id']}.r",
        "seq": seq,
        "timestamp": int(time.time() * 1000),
        "payload": {
            "text": content.text,
            "in_reply_to": msg["event_id"],
            "client_msg_id": payload["client_msg_id"],
            "quick_replies": list(content.quick_replies),
            "sources": list(content.sources),
            "sender": "bot",
        },
    }
