"""``parley worker``: the worker's composition root, assembling the Faust app, the models
it serves and its agents.

A worker runs the conversation agent (the NLU and dialogue steps, see
agents/conversation.py) and — when a knowledge base is available — the knowledge
agent with its ``kb.documents`` follower. Models come from ``PARLEY_NLU_MODEL`` /
``PARLEY_KB_INDEX``; when those are unset the demo bot's (``examples/demo/``) are
built on first use and cached under ``PARLEY_DATA_DIR`` (``parley up`` builds them
once before starting workers). This is the only place that knows where the bot's
files are: the agents get their paths from here.
"""

from __future__ import annotations

import asyncio

import click
import uvloop
from faust import Worker

from agents.conversation import register_conversation_agent
from agents.dialogue.agent import DialogueStep, knowledge_result_emitter
from agents.dialogue.policy import load_policy
from agents.knowledge.agent import register_knowledge_agent, start_follower
from agents.knowledge.cache import AnswerCache
from agents.knowledge.demo import resolve_kb_index
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.service import KnowledgeService
from agents.knowledge.settings import KnowledgeSettings
from agents.nlu.agent import NluStep, Understander
from agents.nlu.demo import resolve_nlu_model
from agents.nlu.model import NLUModel
from examples import DEMO, BotFiles
from kernel.logs import configure_logging
from kernel.settings import Settings
from streams.app import WorkerContext, create_app

__all__ = ["build_worker", "load_understander", "worker"]


@click.command()
@click.option("--web-port", type=int, help="HTTP port for /healthz /readyz /metrics.")
def worker(web_port: int | None) -> None:
    """Run a stream worker in the consumer group (partitions are shared among workers)."""
    settings = Settings.from_env()
    if web_port is not None:
        settings = settings.replace(worker_web_port=web_port)
    configure_logging("worker", settings.log_level, settings.log_json)
    ctx = build_worker(settings)
    uvloop.install()
    Worker(ctx.app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()


def load_understander(settings: Settings, bot: BotFiles = DEMO) -> Understander:
    """The NLU model the worker serves: PARLEY_NLU_MODEL, or the bot's (trained once)."""
    return NLUModel.load(resolve_nlu_model(settings, bot.nlu))


def build_worker(settings: Settings, bot: BotFiles = DEMO) -> WorkerContext:
    """A Faust app with every agent registered, ready for ``faust.Worker``."""
    ctx = create_app(settings)
    understand = NluStep(ctx, load_understander(settings, bot))
    answers = _register_knowledge(ctx, KnowledgeSettings.from_env(), bot) \
        if settings.knowledge else None
    dialogue = DialogueStep(ctx, load_policy(settings, bot.responses), answers)
    register_conversation_agent(ctx, understand, dialogue)
    ctx.app.closers.append(dialogue.marked)  # before the Redis client closes
    return ctx


def _register_knowledge(ctx: WorkerContext, knowledge: KnowledgeSettings,
                        bot: BotFiles) -> AnswerCache | None:
    """Register the knowledge agent; returns its answer cache, which dialogue reads too."""
    index = resolve_kb_index(ctx.settings, bot.knowledge, knowledge)
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
