"""Assembling a worker: the Faust app, the models it serves and its agents.

A worker runs the conversation agent (the NLU and dialogue steps, see
agents/conversation.py) and — when a knowledge base is available — the knowledge
agent with its ``kb.documents`` follower. Models
come from ``PARLEY_NLU_MODEL`` / ``PARLEY_KB_INDEX``; when those are unset the
demo domain's are built on first use and cached under ``PARLEY_DATA_DIR``
(``parley up`` builds them once before starting workers).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agents.conversation import register_conversation_agent
from agents.dialogue.agent import DialogueStep, knowledge_result_emitter
from agents.dialogue.policy import load_policy
from agents.nlu.agent import NluStep, Understander
from kernel.settings import Settings
from streams.app import WorkerContext, create_app

if TYPE_CHECKING:
    from agents.knowledge.cache import AnswerCache
    from agents.knowledge.settings import KnowledgeSettings

__all__ = ["build_worker", "load_understander"]


def load_understander(settings: Settings) -> Understander:
    """The NLU model the worker serves: PARLEY_NLU_MODEL, or the demo domain's."""
    from agents.nlu.demo import resolve_nlu_model
    from agents.nlu.model import NLUModel

    return NLUModel.load(resolve_nlu_model(settings))


def build_worker(settings: Settings) -> WorkerContext:
    """A Faust app with every agent registered, ready for ``faust.Worker``."""
    from agents.knowledge.settings import KnowledgeSettings

    ctx = create_app(settings)
    understand = NluStep(ctx, load_understander(settings))
    answers = _register_knowledge(ctx, KnowledgeSettings.from_env()) \
        if settings.knowledge else None
    dialogue = DialogueStep(ctx, load_policy(settings), answers)
    register_conversation_agent(ctx, understand, dialogue)
    ctx.app.closers.append(dialogue.marked)  # before the Redis client closes
    return ctx


def _register_knowledge(ctx: WorkerContext, knowledge: KnowledgeSettings) -> AnswerCache | None:
    """Register the knowledge agent; returns its answer cache, which dialogue reads too."""
    from agents.knowledge.agent import register_knowledge_agent, start_follower
    from agents.knowledge.demo import resolve_kb_index
    from agents.knowledge.knowledge_base import KnowledgeBase
    from agents.knowledge.service import KnowledgeService

    index = resolve_kb_index(ctx.settings, knowledge)
    if index is None:  # the knowledge agent is off
        return None
    service = KnowledgeService.from_settings(
        KnowledgeBase.open(index), knowledge, ctx.store.redis,
        conversation_ttl_s=ctx.settings.session_ttl_s,
    )
    register_knowledge_agent(ctx.app, ctx.settings, service, knowledge_result_emitter(ctx))

    @ctx.app.task
    async def follow_documents() -> None:
        follower = start_follower(service, ctx.settings, asyncio.get_running_loop())
        ctx.app.ready_checks.append(lambda: follower.error is None)

        async def stop_following() -> None:
            await asyncio.to_thread(follower.stop)
            await service.aclose()

        ctx.app.closers.append(stop_following)

    return service.cache
