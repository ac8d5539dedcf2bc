"""Publishing bots on the real embedded broker: `parley bot publish` while a worker-side
follower runs swaps the tenant's bot; the real trained NLU model crosses the topic whole
and serves from the worker's folder; a task begun on one version is understood and
decided by that version's model and flows after a canary arrives."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from agents.actions.registry import ActionRegistry
from agents.bots import BotRegistry, BotsFollower, UnpackedBot
from agents.bots.bundle import bundle_from_folders
from agents.bots.cli import bot as bot_cli
from agents.bots.loading import ServedBot, load_served_bot
from agents.bots.publisher import BotPublisher
from agents.dialogue.cli import TEMPLATE
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.sessions import Session
from agents.dialogue.state import DialogueState
from agents.dialogue.training import ensure_nlu_model
from agents.dialogue.turns import Incoming, Kind, Turn, decide_turns
from agents.nlu.agent import understood_events
from agents.nlu.model import NLUModel
from examples import DEMO
from kernel.rollout import rollout_bucket
from kernel.settings import Settings
from parley.worker import TenantBot, TenantBots
from streams.keys import ConversationKeys
from streams.security import bootstrap_config
from streams.topics import BOTS, bots_max_message_bytes


@pytest.fixture(scope="module")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bot's real trained model (intent.onnx ~17 MB), trained once here."""
    return ensure_nlu_model(load_bot(DEMO.folder), tmp_path_factory.mktemp("models"))


@dataclass
class Served:
    """What the worker's loader makes of a version (its flows and its real NLU model),
    and the marker that tells the versions apart."""

    marker: str
    served: ServedBot

    # What parley.worker.TenantBots reads of a version it holds.
    @cached_property
    def manager(self) -> DialogueManager:
        return DialogueManager(self.served.bot)

    @property
    def model(self) -> NLUModel:
        return self.served.model


def load(unpacked: UnpackedBot) -> Served:
    return Served(marker_of(unpacked), load_served_bot(unpacked))


def marker_of(unpacked: UnpackedBot) -> str:
    """The marker :func:`write_bot` left in the version's responses.yml."""
    return (unpacked.bot_dir / "responses.yml").read_text().rsplit("# marker: ", 1)[1].strip()


def write_bot(folder: Path, marker: str, *, knowledge: dict[str, str] | None = None) -> Path:
    """The demo bot, with ``marker`` in a comment of responses.yml (so each marker is
    another version) and, when given, these knowledge documents instead of its own."""
    if not folder.exists():
        shutil.copytree(DEMO.folder, folder, ignore=shutil.ignore_patterns("__pycache__"))
    responses = folder / "responses.yml"
    text = responses.read_text().split("\n# marker: ", 1)[0]
    responses.write_text(f"{text}\n# marker: {marker}\n")
    if knowledge is not None:
        shutil.rmtree(folder / "knowledge")
        (folder / "knowledge").mkdir()
        for name, body in knowledge.items():
            (folder / "knowledge" / name).write_text(body)
    return folder


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(settings: Settings, *args: str, fails: bool = False) -> str:
    """``parley bot ARGS`` against the test's topics: its output; it must succeed, or
    with ``fails`` exit 1 with a message (never a traceback)."""
    env = {"PARLEY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "PARLEY_TOPIC_PREFIX": settings.topic_prefix,
           "PARLEY_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(bot_cli, list(args), env=env)
    if fails:
        assert result.exit_code == 1 and "Error: " in result.output, \
            (result.output, result.exception)
        return result.output
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture
def worker_side(settings: Settings, tmp_path: Path
                ) -> Iterator[tuple[BotRegistry[Served], BotsFollower[Served]]]:
    registry: BotRegistry[Served] = BotRegistry(load, keep_previous=1)
    follower = BotsFollower(registry, tmp_path / "worker" / "served-bots",
                            bootstrap=settings.kafka_bootstrap, topic=settings.topic(BOTS))
    follower.start()
    assert follower.wait_caught_up(20), follower.error
    yield registry, follower
    follower.stop()


def test_the_bots_topic_takes_a_whole_version(settings: Settings) -> None:
    admin = AdminClient({**bootstrap_config(settings.kafka_bootstrap)})
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic(BOTS))
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
    assert int(configs["max.message.bytes"].value) == bots_max_message_bytes() == 64 << 20


@pytest.mark.timeout(180)
def test_a_published_bot_swaps_in_on_a_running_worker(
        settings: Settings, tmp_path: Path, demo_model_dir: Path,
        worker_side: tuple[BotRegistry[Served], BotsFollower[Served]]) -> None:
    registry, follower = worker_side
    assert registry.get("acme") is None
    bot = write_bot(tmp_path / "bank", "version one", knowledge={})
    out = cli(settings, "publish", str(bot), "--tenant", "acme", "--model", str(demo_model_dir))
    assert out.startswith("published bank version ")
    wait_for(lambda: registry.get("acme") is not None, "the first version")
    first = registry.get("acme")
    assert first is not None and first.content.marker == "version one"
    # The real model crossed the topic whole and classifies from the worker's own folder.
    assert first.unpacked.folder.parent == tmp_path / "worker" / "served-bots"
    assert (first.unpacked.model_dir / "intent.onnx").stat().st_size > 10_000_000
    assert first.content.served.model.understand("where is my order?").intent == "order_status"
    assert first.content.served.bot.version == first.version  # what the state records
    assert "track_order" in first.content.served.bot.flows

    write_bot(bot, "version two")
    # Without --model: the bot is trained (as `parley train` caches it) and published.
    cli(settings, "publish", str(bot), "--tenant", "acme")
    wait_for(lambda: (b := registry.get("acme")) is not None and b.version != first.version,
             "the second version")
    second = registry.get("acme")
    assert second is not None and second.content.marker == "version two"
    assert second.content.served.model.understand("where is my order?").intent == "order_status"
    assert (settings.data_dir / "bots").is_dir()  # parley train's cache, apart from the worker's
    # A conversation inside a flow on the first version finishes on it.
    in_flow = registry.for_conversation("acme", first.version, in_flow=True, user_id="ann")
    assert in_flow is not None and in_flow.version == first.version
    between = registry.for_conversation("acme", first.version, in_flow=False, user_id="ann")
    assert between is not None and between.version == second.version

    # A version whose model does not fit its bot (published around the CLI's check) is
    # refused by the worker's loader: the tenant stays on the version it had.
    other = tmp_path / "template"
    shutil.copytree(TEMPLATE, other)
    publisher = BotPublisher(settings.kafka_bootstrap, settings.topic(BOTS))
    publisher.publish(bundle_from_folders("acme", other, demo_model_dir))
    publisher.flush()
    wait_for(lambda: follower.failed == 1, "the loader to refuse the mismatched version")
    assert registry.get("acme") is second

    listed = cli(settings, "list")
    assert listed.startswith("acme\tstable\ttemplate\t")  # what was published last

    cli(settings, "unpublish", "--tenant", "acme")
    wait_for(lambda: registry.get("acme") is None, "the tombstone")
    assert follower.error is None and follower.installed == 2 and follower.removed == 1
    assert "no bot is published" in cli(settings, "list")


@pytest.mark.timeout(180)
def test_a_new_worker_serves_the_current_versions_and_skips_bad_records(
        settings: Settings, tmp_path: Path, demo_model_dir: Path) -> None:
    for tenant, marker in (("acme", "old"), ("acme", "new"), ("globex", "hi")):
        bot = write_bot(tmp_path / f"{tenant}-{marker}", marker, knowledge={})
        cli(settings, "publish", str(bot), "--tenant", tenant, "--model", str(demo_model_dir))
    raw = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    raw.produce(settings.topic(BOTS), key=b"initech", value=b"not avro")
    raw.flush(10)

    loads: list[str] = []

    def counted(unpacked: UnpackedBot) -> str:
        loads.append(unpacked.version)
        return marker_of(unpacked)

    registry: BotRegistry[str] = BotRegistry(counted)
    follower = BotsFollower(registry, tmp_path / "late-worker",
                            bootstrap=settings.kafka_bootstrap, topic=settings.topic(BOTS))
    follower.start()
    try:
        assert follower.wait_caught_up(30), follower.error
        acme, globex = registry.get("acme"), registry.get("globex")
        assert acme is not None and acme.content == "new"
        assert globex is not None and globex.content == "hi"
        assert registry.get("initech") is None and follower.undecodable == 1
        assert follower.error is None
    finally:
        follower.stop()


@pytest.mark.timeout(120)
def test_a_worker_built_after_a_publish_serves_the_bot_from_its_first_message(
        settings: Settings, tmp_path: Path, demo_model_dir: Path) -> None:
    from agents.bots.serving import follow_bots
    from infra.ports import find_free_ports
    from streams.app import create_app

    bot = write_bot(tmp_path / "bank", "hello", knowledge={})
    cli(settings, "publish", str(bot), "--tenant", "acme", "--model", str(demo_model_dir))
    ctx = create_app(settings.replace(worker_web_port=find_free_ports(1)[0],
                                      data_dir=tmp_path / "worker"))
    registry: BotRegistry[str] = BotRegistry(marker_of)
    follower = follow_bots(ctx, registry, wait_s=30)
    try:
        loaded = registry.get("acme")  # installed before follow_bots returned
        assert loaded is not None and loaded.content == "hello"
        assert loaded.unpacked.folder.parent == tmp_path / "worker" / "served-bots"
        assert all(check() for check in ctx.app.ready_checks)
    finally:
        follower.stop()


def test_a_worker_without_the_bots_topic_fails_at_start_up(settings: Settings,
                                                           tmp_path: Path) -> None:
    from agents.bots import BotPublishError
    from agents.bots.serving import follow_bots
    from infra.ports import find_free_ports
    from streams.app import create_app

    ctx = create_app(settings.replace(worker_web_port=find_free_ports(1)[0], data_dir=tmp_path,
                                      topic_prefix=settings.topic_prefix + "missing."))
    with pytest.raises(BotPublishError, match="does not exist"):
        follow_bots(ctx, BotRegistry(lambda u: u), wait_s=5)


@pytest.mark.timeout(180)
def test_the_bots_knowledge_documents_follow_it_to_the_tenant(
        settings: Settings, tmp_path: Path, demo_model_dir: Path) -> None:
    from agents.encoders.embedder import Embedder, build_embedder
    from agents.knowledge.follower import KbDocumentsFollower
    from agents.knowledge.knowledge_base import KnowledgeBase

    bot = write_bot(tmp_path / "bank", "one", knowledge={
        "hours.md": "# Opening hours\n\nNine to five.\n",
        "fees.md": "# Card fees\n\nNo fee in the euro zone.\n"})
    out = cli(settings, "publish", str(bot), "--tenant", "acme", "--model", str(demo_model_dir))
    assert f"published 2 knowledge documents to {settings.topic('kb.documents')}" in out

    write_bot(bot, "two", knowledge={"hours.md": "# Opening hours\n\nNine to five.\n"})
    out = cli(settings, "publish", str(bot), "--tenant", "acme", "--model", str(demo_model_dir))
    assert "published 1 knowledge documents" in out and "deleted 1: fees" in out

    knowledge = KnowledgeBase(Embedder(build_embedder("wordllama", tmp_path / "embedder")))
    follower = KbDocumentsFollower(knowledge, bootstrap=settings.kafka_bootstrap,
                                   topic=settings.topic("kb.documents"))
    follower.start()
    try:
        assert follower.wait_caught_up(20), follower.error
        index = knowledge.tenant("acme")
        assert index is not None
        assert sorted(e.document.id for e in index.documents()) == ["hours"]
    finally:
        follower.stop()


def split_users(tenant: str, percent: int) -> tuple[str, str]:
    """A user inside a ``percent`` % rollout of ``tenant`` and one outside it."""
    users = [f"user-{i}" for i in range(100)]
    return (next(u for u in users if rollout_bucket(tenant, u) < percent),
            next(u for u in users if rollout_bucket(tenant, u) >= percent))


def hears_scrap_that_as_a_greeting(folder: Path) -> Path:
    """The bot in ``folder`` with "scrap that" taught as a greeting, not a cancel: its
    model (trained by the CLI on publish) disagrees with the demo's on that message."""
    intents = folder / "intents.yml"
    text = intents.read_text().replace("      - scrap that\n", "")
    intents.write_text(text.replace("      - yo\n", "      - yo\n      - scrap that\n"
                                    "      - scrap that, hi\n      - hi, scrap that\n", 1))
    return folder


#: The conversation the canary test's user begins a task in.
TASK = ConversationKeys("acme", "c-task")


def said_by(bots: TenantBots, user: str, seq: int, text: str) -> Incoming:
    """The user's message in TASK as the NLU step understands it: by the model of the
    version the user is routed to now."""
    sent = datetime.fromtimestamp(1_765_000_000 + seq, UTC)
    message = {"event_id": f"e{seq}", "tenant_id": TASK.tenant_id,
               "conversation_id": TASK.conversation_id, "user_id": user, "channel": "ws",
               "seq": seq, "timestamp": sent, "trace_id": f"t{seq}", "reply_route": "gw",
               "payload": {"text": text, "client_msg_id": f"m{seq}"}}
    model = bots.model(TASK.tenant_id, user)
    (event,) = understood_events([message], model.understand_batch([text], [sent]))
    return Incoming(TASK, event, Kind.MESSAGE)


def decide(bots: TenantBots, item: Incoming, session: Session) -> Turn:
    """The dialogue step's decision, as the worker wires it."""
    (turn,) = decide_turns([item], {TASK: session}, set(), {}, bots.manager,
                           models=bots.model_of)
    return turn


def dialogue(turn: Turn) -> DialogueState:
    return DialogueState.from_bytes(turn.session.dialogue)


def heard(turn: Turn) -> str:
    """The intent the turn decided the user's message on (kept in the state's history)."""
    return [entry for entry in dialogue(turn).history if entry.role == "user"][-1].label


def marker_for(registry: BotRegistry[Served], user: str, recorded: str = "",
               in_flow: bool = False) -> str:
    loaded = registry.for_conversation("acme", recorded, in_flow, user_id=user)
    assert loaded is not None
    return loaded.content.marker


@pytest.mark.timeout(300)
def test_a_canary_serves_some_users_of_a_tenant_until_promoted_or_rolled_back(
        settings: Settings, tmp_path: Path, demo_model_dir: Path,
        worker_side: tuple[BotRegistry[Served], BotsFollower[Served]]) -> None:
    registry, follower = worker_side
    model = ("--model", str(demo_model_dir))
    one = write_bot(tmp_path / "one", "version one", knowledge={})
    two = hears_scrap_that_as_a_greeting(write_bot(tmp_path / "two", "version two",
                                                   knowledge={}))
    # Without a stable version for the other users, a canary is refused.
    assert "has no stable version" in cli(settings, "publish", str(two), "--tenant", "acme",
                                          *model, "--canary", "30", fails=True)
    cli(settings, "publish", str(one), "--tenant", "acme", *model)
    wait_for(lambda: registry.get("acme") is not None, "the stable version")
    # A user begins a task on the stable version (the worker's routing, real flows).
    inside, outside = split_users("acme", 30)
    bots = TenantBots(TenantBot(DialogueManager(load_bot(DEMO.folder)),
                                NLUModel.load(demo_model_dir), ActionRegistry()),
                      registry)  # type: ignore[arg-type]  # Served has what it reads
    task = decide(bots, said_by(bots, inside, 1, "I want to send money"), Session(TASK))
    assert dialogue(task).active_flow == "transfer_money"
    # Version two with its own model (trained by the CLI), as a canary.
    out = cli(settings, "publish", str(two), "--tenant", "acme", "--canary", "30")
    assert "canary for 30 % of its users" in out
    wait_for(lambda: registry.canary("acme") is not None, "the canary")
    stable = registry.get("acme")
    assert stable is not None and stable.content.marker == "version one"

    # Two users of one tenant, served by two versions (flows and real NLU model alike).
    assert marker_for(registry, inside) == "version two"
    assert marker_for(registry, outside) == "version one"
    canary = registry.for_user("acme", inside)
    assert canary is not None and canary.content.served.bot.version == canary.version
    assert canary.content.served.model.version != stable.content.served.model.version
    # A task the inside user began on the stable version finishes on it, and its messages
    # are understood by the stable version's model: the canary's (which the NLU step,
    # routing by user, asks) hears a greeting where the task's own hears "cancel".
    assert marker_for(registry, inside, stable.version, in_flow=True) == "version one"
    scrap = said_by(bots, inside, 2, "scrap that")
    assert scrap.msg["payload"]["intent"] == "greet"  # what chat.understood gets
    assert scrap.msg["payload"]["model_version"] == canary.content.served.model.version
    cancelled = decide(bots, scrap, task.session)
    assert cancelled.bot_version == stable.version and heard(cancelled) == "cancel"
    assert dialogue(cancelled).active_flow is None
    # Between tasks, the canary's model understands and its flows decide.
    greeted = decide(bots, said_by(bots, inside, 3, "scrap that"), cancelled.session)
    assert greeted.bot_version == canary.version and heard(greeted) == "greet"
    listed = cli(settings, "list").splitlines()
    assert [line.split("\t")[:3] for line in listed] == [
        ["acme", "stable", "one"], ["acme", "canary 30%", "two"]]

    # Growing the rollout keeps the users already in, and reloads nothing.
    cli(settings, "canary", "--tenant", "acme", "--percent", "90")
    wait_for(lambda: (c := registry.canary("acme")) is not None and c.percent == 90,
             "the new percentage")
    assert marker_for(registry, inside) == "version two"

    # Promote: everyone's new tasks run on version two.
    out = cli(settings, "promote", "--tenant", "acme")
    assert out.startswith("promoted two version ")
    wait_for(lambda: registry.canary("acme") is None and (s := registry.get("acme"))
             is not None and s.content.marker == "version two", "the promotion")
    assert marker_for(registry, outside) == "version two"
    assert [line.split("\t")[:2] for line in cli(settings, "list").splitlines()] == [
        ["acme", "stable"]]
    assert "has no canary" in cli(settings, "promote", "--tenant", "acme", fails=True)

    # A third version as a canary, rolled back: its users go back to version two, and a
    # task begun on it finishes on it.
    three = write_bot(tmp_path / "three", "version three", knowledge={})
    cli(settings, "publish", str(three), "--tenant", "acme", *model, "--canary", "50")
    wait_for(lambda: (c := registry.canary("acme")) is not None
             and c.bot.content.marker == "version three", "the second canary")
    begun = registry.canary("acme")
    assert begun is not None
    inside = split_users("acme", 50)[0]
    assert marker_for(registry, inside) == "version three"
    assert cli(settings, "rollback", "--tenant", "acme").startswith(
        "withdrew tenant acme's canary three version ")
    wait_for(lambda: registry.canary("acme") is None, "the rollback")
    assert marker_for(registry, inside) == "version two"
    assert marker_for(registry, inside, begun.bot.version, in_flow=True) == "version three"
    assert "has no canary" in cli(settings, "rollback", "--tenant", "acme", fails=True)
    assert follower.error is None and follower.rejected == 0 and follower.failed == 0
