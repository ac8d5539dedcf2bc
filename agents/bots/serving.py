"""Wiring the ``bots`` follower into a worker: one call from the composition root.

:func:`follow_bots` starts the follower when the worker is built, before Faust
starts, and waits until every version already published is installed: the
first message a worker takes is then served by the tenant's bot, not by a
fallback. It ties the follower to the worker's ``/readyz`` (a stopped follower
makes it 503) and to its shutdown.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

from agents.bots.errors import BotPublishError
from agents.bots.follower import BotsFollower
from agents.bots.registry import BotRegistry
from streams.app import WorkerContext
from streams.security import kafka_credentials, sasl_config
from streams.topics import BOTS

__all__ = ["SERVED_BOTS_DIR", "follow_bots"]

#: Where a worker unpacks published versions, under its data dir.
SERVED_BOTS_DIR = "served-bots"

T = TypeVar("T")


def follow_bots(ctx: WorkerContext, registry: BotRegistry[T], *,
                wait_s: float = 120.0) -> BotsFollower[T]:
    """Follow ``bots`` into ``registry``, versions unpacked under ``<data dir>/served-bots``
    (``parley train`` keeps its own cache in ``<data dir>/bots``).

    Raises :class:`BotPublishError` when the topic does not exist, or when the
    versions already published are not installed within ``wait_s`` seconds (a broker
    that does not answer, a loader that hangs): a worker that cannot serve its
    tenants' bots says so at start-up.
    """
    settings = ctx.settings
    follower = BotsFollower(registry, settings.data_dir / SERVED_BOTS_DIR,
                            bootstrap=settings.kafka_bootstrap, topic=settings.topic(BOTS),
                            registry_url=settings.schema_registry_url,
                            config=sasl_config(kafka_credentials(settings)))
    follower.start()
    deadline = time.monotonic() + wait_s
    while not follower.wait_caught_up(0.1) and follower.error is None \
            and time.monotonic() < deadline:
        pass
    if not follower.wait_caught_up(0):
        error = follower.error
        follower.stop()
        raise BotPublishError(f"the published bots on {settings.topic(BOTS)} were not "
                              f"installed within {wait_s:g} s"
                              + (f": {error}" if error is not None else ""))
    ctx.app.ready_checks.append(lambda: follower.error is None)

    async def stop_following() -> None:
        await asyncio.to_thread(follower.stop)

    ctx.app.closers.append(stop_following)
    return follower
