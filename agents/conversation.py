"""The conversation agent: ``chat.inbound`` + ``knowledge.results`` + ``actions.results``
+ ``handoff.events`` (the agent console's commands) → ``chat.outbound``.

One Faust agent per worker takes both topics as one stream, in adaptive batches
(streams/batching.py), and runs two steps on each batch:

1. the NLU step (agents/nlu/agent.py) on the batch's user messages: it
   classifies them and sends their ``ChatUnderstood`` events to
   ``chat.understood``;
2. the dialogue step (agents/dialogue/agent.py) on those same events and the
   batch's knowledge answers and action results, in the order the agent took them: sessions,
   replies, knowledge requests. Meanwhile the broker takes the ChatUnderstood
   events; the batch ends when it holds them too. (A message whose turn runs on another
   bot version than the one the NLU step routed it to — a task begun before a canary
   switch — is understood again there with that version's model: agents/dialogue/turns.py.)

``chat.understood`` is keyed and partitioned as ``chat.inbound`` is, so the
dialogue step needs nothing that reading the topic back would bring: a
conversation's messages are already in this worker, in order. Kafka Streams
fuses such a chain into one sub-topology for the same reason. The topic is
still written in full, for analytics, taps and any other consumer. Reading it
back cost a second broker hop per message: from 100 to 500 msg/s, a third to a
half of the pipeline's median latency (docs/benchmarks.md).

The events are acknowledged, and their offsets committed, only after both steps
are done. A worker that dies in between has its batch processed again by the
partition's next owner: the NLU step produces the ChatUnderstood events again
(``chat.understood`` is at-least-once, like every topic) and the dialogue step
skips what it had recorded. A failure of Redis or the broker in the dialogue
step retries that step alone (``process_until_done``), so the NLU step's events
are not produced twice for it.

Poison (streams/dead_letters.py): an event that does not decode, or holds ids
that cannot name a conversation, goes to its topic's dead-letter topic in the
step that decodes it. A batch that fails for any other reason than an
unavailable dependency is processed again an event at a time, and the events
that fail alone are dead-lettered (``streams.batching.process_or_dead_letter``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

from faust.types import EventT

from agents.dialogue.turns import Incoming
from agents.nlu.agent import Understood
from streams.app import WorkerContext, raw_topic
from streams.batching import process_batches, process_until_done
from streams.topics import CONVERSATION_NOTICES

__all__ = ["Respond", "Understand", "process_batch", "register_conversation_agent"]


class Understand(Protocol):
    """The NLU step (:class:`agents.nlu.agent.NluStep`)."""

    async def __call__(self, events: Sequence[EventT]) -> Understood: ...


class Respond(Protocol):
    """The dialogue step (:class:`agents.dialogue.agent.DialogueStep`)."""

    def understood(self, msg: dict[str, Any]) -> Incoming: ...

    async def decode_result(self, event: EventT) -> Incoming | None: ...

    async def __call__(self, batch: Sequence[Incoming]) -> None: ...


def register_conversation_agent(ctx: WorkerContext, understand: Understand,
                                respond: Respond) -> None:
    settings = ctx.settings
    inbound = ctx.inbound.get_topic_name()
    source = raw_topic(ctx.app, inbound, ctx.knowledge_results.get_topic_name(),
                       ctx.actions_results.get_topic_name(),
                       ctx.handoff_events.get_topic_name(),
                       settings.topic(CONVERSATION_NOTICES))
    process = functools.partial(process_batch, inbound=inbound, understand=understand,
                                respond=respond)

    @ctx.app.agent(source, name=f"{settings.topic_prefix}conversation")
    async def conversation(stream: Any) -> None:  # a faust.Stream
        await process_batches(stream, settings.worker_batch_size, process, "conversation",
                              ctx.dead_letters.send)


async def process_batch(events: Sequence[EventT], *, inbound: str, understand: Understand,
                        respond: Respond) -> None:
    """Both steps for one batch: ``understand`` the events of topic ``inbound``, then
    ``respond`` to what it made of them and to the other events (knowledge answers, action results),
    in the batch's order; return once the broker holds what the NLU step sent."""
    nlu = await understand([e for e in events if e.message.topic == inbound])
    understood = iter(nlu.events)
    batch: list[Incoming] = []
    for event in events:
        if event.message.topic == inbound:
            if (msg := next(understood)) is not None:
                batch.append(respond.understood(msg))
        elif (result := await respond.decode_result(event)) is not None:  # also handoff
            batch.append(result)
    if batch:
        await process_until_done(functools.partial(respond, batch), "dialogue")
    # Not before: the dialogue step's Redis and broker round trips overlap this one.
    # A failure raises, and the whole batch is processed again.
    await nlu.delivered
