"""``parley worker``: run a Faust worker with the NLU and dialogue agents."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from agents.nlu.agent import Understander
from parley.logs import configure_logging
from parley.settings import Settings

__all__ = ["worker"]

logger = logging.getLogger(__name__)


def load_understander(settings: Settings) -> Understander:
    """The NLU model the worker serves: PARLEY_NLU_MODEL, or the demo domain's."""
    from agents.nlu.model import NLUModel

    if settings.nlu_model_dir:
        return NLUModel.load(Path(settings.nlu_model_dir))
    from agents.nlu.demo import ensure_demo_model

    return NLUModel.load(ensure_demo_model(settings.data_dir / "models"))


@click.command()
@click.option("--web-port", type=int, help="HTTP port for /healthz /readyz /metrics.")
def worker(web_port: int | None) -> None:
    """Run a stream worker (NLU + dialogue agents) in the consumer group."""
    import uvloop
    from faust import Worker

    from agents.dialogue.agent import register_dialogue_agent
    from agents.dialogue.policy import RuleBasedPolicy
    from agents.nlu.agent import register_nlu_agent
    from streams.app import create_app

    settings = Settings.from_env()
    if web_port is not None:
        settings = settings.replace(worker_web_port=web_port)
    configure_logging("worker", settings.log_level, settings.log_json)
    model = load_understander(settings)
    ctx = create_app(settings)
    register_nlu_agent(ctx, model)
    register_dialogue_agent(ctx, RuleBasedPolicy.from_file(domain_responses()))
    uvloop.install()
    Worker(ctx.app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()


def domain_responses() -> Path:
    return Path(__file__).resolve().parents[1] / "parley" / "domain" / "demo" / "responses.json"
