"""Which bot a worker runs each tenant's turns on (parley/worker.py ``TenantBots``).

A tenant without a published bot is served by the worker's own bot; publishing for one
tenant changes nothing for another; a task begun on a version finishes on it; a canary
serves its users (model and flows) by the bucket the gateway's flags use too.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agents.actions.registry import ActionRegistry
from agents.bots import BotRegistry, UnpackedBot
from agents.dialogue.cli import TEMPLATE
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.state import DialogueState, Frame
from gateway.tenants import flag_enabled, tenant_config
from kernel.rollout import rollout_bucket
from parley.worker import TenantBot, TenantBots


class Model:
    """An understander stand-in: only its identity matters here."""

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bot") / "bot"
    shutil.copytree(TEMPLATE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


class Backends:
    """An Integrations stand-in: only its backends' names matter here."""

    def __init__(self, *names: str) -> None:
        self.backends = dict.fromkeys(names)


#: Which backends each version's integrations.yml names, in these tests.
BACKENDS = {"own": ("crm",), "v1": ("billing",), "v2": ("crm", "tickets")}


def served(folder: Path, version: str) -> TenantBot:
    return TenantBot(DialogueManager(replace(load_bot(folder), version=version)),
                     Model(version), actions_named(version),  # type: ignore[arg-type]
                     Backends(*BACKENDS.get(version, ())))  # type: ignore[arg-type]


def actions_named(version: str) -> ActionRegistry:
    """A version's actions: one action, named after the version, to tell them apart."""
    registry = ActionRegistry()
    registry.action(f"lookup_{version}", inputs=dict, outputs=dict)(_echo)
    return registry


async def _echo(inputs: dict[str, Any], _ctx: Any) -> dict[str, Any]:
    return inputs


def published(version: str) -> UnpackedBot:
    return UnpackedBot(version=version, name="bank", folder=Path("/nowhere") / version)


@pytest.fixture
def bots(template: Path) -> TenantBots:
    registry: BotRegistry[TenantBot] = BotRegistry(lambda u: served(template, u.version))
    return TenantBots(served(template, "own"), registry)


def in_flow(version: str) -> DialogueState:
    return DialogueState(bot_version=version, stack=(Frame("order_status"),))


def idle(version: str) -> DialogueState:
    return DialogueState(bot_version=version)


def test_a_tenant_without_a_published_bot_gets_the_workers_own(bots: TenantBots) -> None:
    assert bots.model("acme", "ann").name == "own"  # type: ignore[attr-defined]
    assert bots.manager("acme", "ann", DialogueState()).bot.version == "own"


def test_publishing_for_one_tenant_leaves_the_others_on_the_own_bot(bots: TenantBots) -> None:
    bots.registry.install("acme", published("v1"))
    assert bots.model("acme", "ann").name == "v1"  # type: ignore[attr-defined]
    assert bots.manager("acme", "ann", idle("own")).bot.version == "v1"
    assert bots.model("globex", "ann").name == "own"  # type: ignore[attr-defined]
    assert bots.manager("globex", "ann", idle("")).bot.version == "own"
    assert bots.manager("globex", "ann", in_flow("v1")).bot.version == "own"


def test_a_task_begun_on_a_version_finishes_on_it(bots: TenantBots) -> None:
    assert bots.manager("acme", "ann", in_flow("own")).bot.version == "own"
    bots.registry.install("acme", published("v1"))
    assert bots.manager("acme", "ann", in_flow("own")).bot.version == "own"  # form on own bot
    bots.registry.install("acme", published("v2"))
    assert bots.manager("acme", "ann", in_flow("v1")).bot.version == "v1"  # still held
    assert bots.manager("acme", "ann", idle("v1")).bot.version == "v2"  # between tasks: current


def test_unpublishing_returns_the_tenant_to_the_own_bot(bots: TenantBots) -> None:
    bots.registry.install("acme", published("v1"))
    bots.registry.remove("acme")
    assert bots.manager("acme", "ann", in_flow("v1")).bot.version == "own"
    assert bots.model("acme", "ann").name == "own"  # type: ignore[attr-defined]


def test_a_canary_serves_the_users_below_its_percentage_model_and_flows_alike(
        bots: TenantBots) -> None:
    bots.registry.install("acme", published("v1"))
    bots.registry.install_canary("acme", published("v2"), 25)
    users = [f"user-{i}" for i in range(100)]
    inside = [u for u in users if rollout_bucket("acme", u) < 25]
    outside = [u for u in users if rollout_bucket("acme", u) >= 25]
    assert inside and outside
    for user in inside:
        assert bots.model("acme", user).name == "v2"  # type: ignore[attr-defined]
        assert bots.manager("acme", user, DialogueState()).bot.version == "v2"
    for user in outside:
        assert bots.model("acme", user).name == "v1"  # type: ignore[attr-defined]
        assert bots.manager("acme", user, idle("v1")).bot.version == "v1"
    # A form begun on the stable version by a user now in the canary finishes on it.
    assert bots.manager("acme", inside[0], in_flow("v1")).bot.version == "v1"
    # The gateway's feature flags put each user in the same bucket.
    assert flag_enabled(tenant_config("acme", flags={"x": 25}), "x", inside[0])
    assert not flag_enabled(tenant_config("acme", flags={"x": 25}), "x", outside[0])


def test_an_action_runs_with_the_integrations_of_the_version_that_asked_for_it(
        bots: TenantBots) -> None:
    assert bots.actions("acme", "own").names() == ["lookup_own"]
    bots.registry.install("acme", published("v1"))
    bots.registry.install("acme", published("v2"))
    assert bots.actions("acme", "v1").names() == ["lookup_v1"]  # a task begun on v1
    assert bots.actions("acme", "v2").names() == ["lookup_v2"]
    assert bots.actions("acme", "own").names() == ["lookup_own"]  # begun on the own bot
    # A version this worker no longer holds (published over since): the current one's.
    bots.registry.install("acme", published("v3"))
    assert bots.actions("acme", "v1").names() == ["lookup_v3"]
    # A canary's tasks call the backends of the canary's own folder.
    bots.registry.install_canary("acme", published("v4"), 10)
    assert bots.actions("acme", "v4").names() == ["lookup_v4"]
    # Another tenant's request never runs with acme's integrations.
    assert bots.actions("globex", "v3").names() == ["lookup_own"]
    assert bots.actions("globex", "").names() == ["lookup_own"]


def test_a_tenants_level_follows_the_backends_of_the_versions_it_is_served(
        bots: TenantBots) -> None:
    """Degradation (agents/degradation.py) lowers a tenant's level for the backends its
    own bot calls, and the worker reports the breakers of every version it holds."""
    assert bots.backends_of("acme") == {"crm"}  # the worker's own bot
    bots.registry.install("acme", published("v1"))
    assert bots.backends_of("acme") == {"billing"}
    bots.registry.install_canary("acme", published("v2"), 10)
    assert bots.backends_of("acme") == {"billing", "crm", "tickets"}  # stable and canary
    assert bots.backends_of("globex") == {"crm"}
    reported = [set(i.backends) for i in bots.integrations()]
    assert reported == [{"crm"}, {"billing"}, {"crm", "tickets"}]


def test_the_model_of_a_version_is_that_versions_while_held(bots: TenantBots) -> None:
    """The dialogue step understands a message again with the model of the version its
    turn runs on (agents/dialogue/turns.py ``understood_on``): it must be that version's,
    and none once the worker no longer holds it."""
    assert bots.model_of("acme", "own").name == "own"  # type: ignore[union-attr]
    bots.registry.install("acme", published("v1"))
    bots.registry.install_canary("acme", published("v2"), 10)
    assert bots.model_of("acme", "v1").name == "v1"  # type: ignore[union-attr]
    assert bots.model_of("acme", "v2").name == "v2"  # type: ignore[union-attr]
    bots.registry.install("acme", published("v3"))
    bots.registry.install("acme", published("v4"))  # v1 published over twice: gone
    assert bots.model_of("acme", "v1") is None
    assert bots.model_of("acme", "v3").name == "v3"  # type: ignore[union-attr]
    assert bots.model_of("globex", "v3") is None  # another tenant's version: not its
