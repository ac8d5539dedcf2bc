"""Bot publishing: trained bot versions shipped to every running worker, per tenant.

The public surface (docs/bot-publishing.md). ``parley bot`` is
:mod:`agents.bots.cli`; the worker side is :class:`BotsFollower` feeding a
:class:`BotRegistry` (a tenant's stable version and, for a percentage of its
users, its :class:`Canary`).
"""

from __future__ import annotations

from agents.bots.bundle import BotBundle, UnpackedBot, bundle_from_folders, check_record, unpack
from agents.bots.errors import BotPublishError, BundleError
from agents.bots.follower import BotsFollower
from agents.bots.publisher import BotPublisher
from agents.bots.registry import BotLoader, BotRegistry, Canary, LoadedBot

__all__ = [
    "BotBundle",
    "BotLoader",
    "BotPublishError",
    "BotPublisher",
    "BotRegistry",
    "BotsFollower",
    "BundleError",
    "Canary",
    "LoadedBot",
    "UnpackedBot",
    "bundle_from_folders",
    "check_record",
    "unpack",
]
