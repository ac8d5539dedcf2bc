"""``parley worker``: the worker's composition root, assembling the Faust app, the models
it serves and its agents.

A worker runs the conversation agent (the NLU and dialogue steps, see
agents/conversation.py), the action agent (agents/actions/, running the HTTP actions of
the bot's integrations.yml: agents/integrations/) and — when a knowledge
base is available — the knowledge agent with its ``kb.documents`` follower. It
serves the bot folder ``PARLEY_BOT`` (default: the demo bot, ``examples/demo/``):
its flows run in the dialogue step, and its NLU model and knowledge index come from
``PARLEY_NLU_MODEL`` / ``PARLEY_KB_INDEX``, or are built from the folder on first
use and cached under ``PARLEY_DATA_DIR`` (``parley up`` builds them once before
starting workers). This is the only place that knows where the bot's files are:
the agents get their paths from here.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, replace

import click
import uvloop
from faust import Worker

from agents.actions.agent import register_action_agent
from agents.actions.registry import ActionRegistry
from agents.bots.bundle import UnpackedBot
from agents.bots.loading import load_served_bot
from agents.bots.registry import BotRegistry
from agents.bots.serving import follow_bots
from agents.conversation import register_conversation_agent
from agents.degradation import LLM_BACKEND, breaker_states, register_degradation
from agents.dialogue.agent import (
    DialogueStep,
    knowledge_result_emitter,
    register_handoff_expiry,
)
from agents.dialogue.domain import Bot
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.state import DialogueState
from agents.dialogue.training import resolve_nlu_model
from agents.integrations.actions import Integrations, integrations_for
from agents.knowledge.agent import register_knowledge_agent, start_follower
from agents.knowledge.cache import AnswerCache
from agents.knowledge.demo import resolve_kb_index
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.service import KnowledgeService
from agents.knowledge.settings import KnowledgeSettings
from agents.nlu.agent import NluStep, Understander
from agents.nlu.model import NLUModel
from agents.proactive.agent import register_business_events_agent
from examples import BotFiles, bot_files
from kernel.logs import configure_logging
from kernel.settings import Settings
from streams.app import WorkerContext, create_app

__all__ = ["bot_files", "build_worker", "load_understander", "worker"]


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


def load_understander(settings: Settings, bot: Bot) -> Understander:
    """The NLU model the worker serves: PARLEY_NLU_MODEL, or the bot's (trained once)."""
    return NLUModel.load(resolve_nlu_model(settings, bot))


def build_worker(settings: Settings, bot: BotFiles | None = None) -> WorkerContext:
    """A Faust app with every agent registered, ready for ``faust.Worker``."""
    bot = bot or bot_files(settings.bot_dir)
    ctx = create_app(settings)
    own = load_bot(bot.folder)
    understander = load_understander(settings, own)
    knowledge = _register_knowledge(ctx, KnowledgeSettings.from_env(), bot) \
        if settings.knowledge and bot.knowledge.is_file() else None
    answers = knowledge.cache if knowledge is not None else None
    integrations = integrations_for(bot.folder)
    bots = TenantBots(TenantBot(DialogueManager(_served(own, answers)),
                                understander, _actions(ctx, integrations), integrations),
                      BotRegistry(functools.partial(_load_published, ctx, answers=answers)))
    follow_bots(ctx, bots.registry)
    register_action_agent(ctx, bots.actions)
    llm = knowledge.breaker if knowledge is not None and knowledge.llm is not None else None
    extra = frozenset([LLM_BACKEND] if llm else [])
    levels = register_degradation(  # docs/operations.md, "Degradation levels"
        ctx, lambda tenant_id: bots.backends_of(tenant_id) | extra,
        breaker_states(bots.integrations, llm))
    if knowledge is not None:
        knowledge.llm_allowed = levels.llm_allowed
    understand = NluStep(ctx, bots.model)
    dialogue = DialogueStep(ctx, bots.manager, answers, levels, models=bots.model_of)
    register_conversation_agent(ctx, understand, dialogue)
    register_handoff_expiry(ctx, dialogue)
    register_business_events_agent(ctx)  # business.events → conversation.notices
    ctx.app.closers.append(dialogue.marked)  # before the Redis client closes
    return ctx


@dataclass(frozen=True)
class TenantBot:
    """What a worker serves one bot version with: its flows, its NLU model and the HTTP
    actions of its integrations.yml."""

    manager: DialogueManager
    model: Understander
    actions: ActionRegistry
    integrations: Integrations | None = None


class TenantBots:
    """Tenant → the bot serving it: the version published for it (``parley bot publish``,
    followed into ``registry``; its canary for the users in the canary's percentage),
    else this worker's own bot (PARLEY_BOT, the demo by default). Which version a
    conversation's turn runs on: BotRegistry's rule."""

    def __init__(self, own: TenantBot, registry: BotRegistry[TenantBot]) -> None:
        self.own, self.registry = own, registry

    def model(self, tenant_id: str, user_id: str) -> Understander:
        """The NLU model of the version the user's new tasks run on: the NLU step's, which
        runs before the conversation's state is read. A message inside a task begun on
        another version is understood again by that version's model (:meth:`model_of`)
        in the dialogue step, before its turn is decided."""
        loaded = self.registry.for_user(tenant_id, user_id)
        return (loaded.content if loaded else self.own).model

    def model_of(self, tenant_id: str, bot_version: str) -> Understander | None:
        """The NLU model of the tenant's version ``bot_version`` (the one a turn runs on,
        as :meth:`manager` chose it): this worker's own bot's, or a held published one's;
        None when this worker does not hold it."""
        if bot_version == self.own.manager.bot.version:
            return self.own.model
        loaded = self.registry.get(tenant_id, bot_version)
        return loaded.content.model if loaded and loaded.version == bot_version else None

    def manager(self, tenant_id: str, user_id: str, state: DialogueState) -> DialogueManager:
        in_flow = state.active_flow is not None
        own = self.own.manager
        if in_flow and state.bot_version == own.bot.version:
            return own  # a task begun on this worker's own bot finishes on it
        loaded = self.registry.for_conversation(tenant_id, state.bot_version, in_flow,
                                                user_id=user_id)
        return (loaded.content if loaded else self.own).manager

    def integrations(self) -> list[Integrations]:
        """The integrations of every version this worker holds, its own bot's first."""
        held = [self.own.integrations, *(loaded.content.integrations
                                         for loaded in self.registry.everything())]
        return list({id(i): i for i in held if i is not None}.values())

    def backends_of(self, tenant_id: str) -> frozenset[str]:
        """The backends the tenant's bot calls: those of the versions its new tasks run on
        (stable and canary), else the worker's own bot's."""
        serving = self.registry.serving(tenant_id)
        bots = [loaded.content for loaded in serving] if serving else [self.own]
        return frozenset(name for bot in bots if bot.integrations is not None
                         for name in bot.integrations.backends)

    def actions(self, tenant_id: str, bot_version: str) -> ActionRegistry:
        """The actions a request runs with: those of the version whose flow asked for
        them (an ActionRequest names it), as configured in that version's folder; the
        tenant's current version when this worker no longer holds it."""
        if bot_version == self.own.manager.bot.version:
            return self.own.actions
        loaded = self.registry.get(tenant_id, bot_version)
        return (loaded.content if loaded else self.own).actions


def _actions(ctx: WorkerContext, integrations: Integrations | None) -> ActionRegistry:
    """The actions of one bot version: the HTTP actions of its integrations.yml
    (agents/integrations/; none without the file), their clients closed with the app
    (a version's own clients and breakers: a newer version starts with closed breakers)."""
    registry = ActionRegistry()
    if integrations is not None:
        integrations.register(registry)
        ctx.app.closers.append(integrations.aclose)
    return registry


def _load_published(ctx: WorkerContext, unpacked: UnpackedBot,
                    answers: AnswerCache | None) -> TenantBot:
    """A published version, as the bots follower installs it (on its thread): its
    ``bot.version`` is the published version id, which a conversation's state records.
    Its integrations.yml is read with this worker's environment (the secrets it names
    must be set here); a file with problems fails the version, which then replaces
    nothing."""
    served = load_served_bot(unpacked)
    integrations = integrations_for(unpacked.bot_dir)
    return TenantBot(DialogueManager(_served(served.bot, answers)), served.model,
                     _actions(ctx, integrations), integrations)


def _served(bot: Bot, answers: AnswerCache | None) -> Bot:
    """The bot as this worker can serve it: without a knowledge agent, its flows must
    never wait for one (they treat it as a bot without documents)."""
    return bot if answers is not None else replace(bot, knowledge_files=())


def _register_knowledge(ctx: WorkerContext, knowledge: KnowledgeSettings,
                        bot: BotFiles) -> KnowledgeService | None:
    """Register the knowledge agent; returns its service, whose answer cache dialogue
    reads too (and whose LLM breaker the degradation levels follow)."""
    index = resolve_kb_index(ctx.settings, bot.knowledge, knowledge)
    if index is None:  # the knowledge agent is off
        return None
    service = KnowledgeService.from_settings(
        KnowledgeBase.open(index), knowledge, ctx.store.redis,
        conversation_ttl_s=ctx.settings.session_ttl_s, counter=ctx.usage,
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

    return service
