"""A message is decided on the understanding of the bot version its turn runs on.

The NLU step picks a model by the user's routing now (``TenantBots.model``); a turn
inside a task begun on another version runs on that version (``BotRegistry``'s rule).
Here two versions of a tenant's bot have models that disagree on the same messages: a
user mid-task on the stable version when the canary starts serving them must get the
stable version's understanding, and the canary's once the task is over.

The models are fakes of the ``Understander`` protocol (real ones take minutes to train;
the integration test of bot publishing serves real ones); the flows, the registry, the
routing, the NLU step's ChatUnderstood and the dialogue step's decisions are the real ones.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.actions.registry import ActionRegistry
from agents.bots import BotRegistry, UnpackedBot
from agents.dialogue.cli import TEMPLATE
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.sessions import Session
from agents.dialogue.state import DialogueState, Frame
from agents.dialogue.turns import Incoming, Kind, Turn, decide_turns, understood_on
from agents.nlu.agent import understood_events
from agents.nlu.model import EntityMatch, Understanding
from kernel.rollout import rollout_bucket
from parley.worker import TenantBot, TenantBots
from streams.keys import ConversationKeys

KEYS = ConversationKeys("acme", "c-1")
ASK = "where is my order"
ANSWER = "it's the blue parcel"  # no digits: only a model's entity can fill order_id


class Understands:
    """An ``Understander`` that knows a few texts; it counts the texts it is given."""

    has_transformer = False

    def __init__(self, version: str, knows: dict[str, tuple[str, tuple[EntityMatch, ...]]]):
        self.version = version
        self.knows = knows
        self.texts: list[str] = []
        self.references: list[datetime] = []

    def understand_batch(self, texts: Sequence[str],
                         reference_time: datetime | Sequence[datetime] | None = None,
                         ) -> list[Understanding]:
        self.texts.extend(texts)
        assert isinstance(reference_time, list)
        self.references.extend(reference_time)
        out = []
        for text in texts:
            intent, entities = self.knows.get(text, ("oos", ()))
            out.append(Understanding(intent, 0.97, intent == "oos", ((intent, 0.97),),
                                     entities, self.version))
        return out


def stable_model() -> Understands:
    """Version A's model: the answer names an order (a model entity), the question is one."""
    return Understands("nlu-aaaa", {
        ASK: ("order_status", ()),
        ANSWER: ("oos", (EntityMatch("order_id", 9, 20, "blue parcel", "55555", "model"),)),
    })


def canary_model() -> Understands:
    """Version B's model: it hears the answer as giving up, and the question as a greeting."""
    return Understands("nlu-bbbb", {ASK: ("greet", ()), ANSWER: ("cancel", ())})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bot") / "bot"
    shutil.copytree(TEMPLATE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


@pytest.fixture
def models() -> dict[str, Understands]:
    return {"A": stable_model(), "B": canary_model(), "own": Understands("nlu-own", {})}


@pytest.fixture
def bots(template: Path, models: dict[str, Understands]) -> TenantBots:
    def served(version: str) -> TenantBot:
        return TenantBot(DialogueManager(replace(load_bot(template), version=version)),
                         models[version], ActionRegistry())

    registry: BotRegistry[TenantBot] = BotRegistry(lambda u: served(u.version))
    registry.install("acme", published("A"))
    return TenantBots(served("own"), registry)


def published(version: str) -> UnpackedBot:
    return UnpackedBot(version=version, name="shop", folder=Path("/nowhere") / version)


#: A user the canary serves at 50 %.
USER = next(u for u in (f"user-{i}" for i in range(100)) if rollout_bucket("acme", u) < 50)


def understood(bots: TenantBots, event_id: str, seq: int, text: str) -> Incoming:
    """A user message as the NLU step understands it: by the model the user is routed to."""
    sent = datetime.fromtimestamp(1_765_000_000 + seq, UTC)  # as Avro decodes it
    message = {"event_id": event_id, "tenant_id": KEYS.tenant_id,
               "conversation_id": KEYS.conversation_id, "user_id": USER, "channel": "ws",
               "seq": seq, "timestamp": sent, "trace_id": f"tr-{event_id}",
               "reply_route": "gw-1", "payload": {"text": text, "client_msg_id": f"m-{event_id}"}}
    model = bots.model(KEYS.tenant_id, USER)
    (event,) = understood_events([message], model.understand_batch([text], [sent]))
    return Incoming(KEYS, event, Kind.MESSAGE)


def decide(bots: TenantBots, item: Incoming, session: Session, *,
           again: bool = True) -> Turn:
    (turn,) = decide_turns([item], {KEYS: session}, set(), {}, bots.manager,
                           models=bots.model_of if again else None)
    return turn


def state(turn: Turn) -> DialogueState:
    return DialogueState.from_bytes(turn.session.dialogue)


def said(turn: Turn) -> str:
    assert turn.reply is not None
    return str(turn.reply["payload"]["text"])


def heard(turn: Turn) -> str:
    """The intent the turn decided the user's message on (the state's history keeps it)."""
    user = [entry for entry in state(turn).history if entry.role == "user"]
    return user[-1].label


def _response(turn: Turn) -> str:
    assert turn.reply is not None
    return str(turn.reply["payload"]["response"])


def asked_on_stable(bots: TenantBots) -> Turn:
    """The user asks about an order on version A: the flow asks for its number."""
    turn = decide(bots, understood(bots, "e1", 1, ASK), Session(KEYS))
    assert state(turn).bot_version == "A"
    assert state(turn).requested_slot == "order_id"
    return turn


def test_a_task_begun_on_the_stable_version_is_understood_by_its_model_after_a_canary(
        bots: TenantBots, models: dict[str, Understands]) -> None:
    asked = asked_on_stable(bots)
    bots.registry.install_canary("acme", published("B"), 50)  # USER is in it from now on
    answer = understood(bots, "e2", 2, ANSWER)
    assert answer.msg["payload"]["model_version"] == "nlu-bbbb"  # what chat.understood got
    assert answer.msg["payload"]["intent"] == "cancel"

    turn = decide(bots, answer, asked.session)

    assert turn.bot_version == "A"
    assert "55555" in said(turn)  # A's model found the order in the answer
    assert heard(turn) == "oos"  # A's intent for it (B's: cancel)
    assert models["A"].texts == [ASK, ANSWER]  # understood again by A, once
    # On its own timestamp, as the NLU step does: a replay gets the same entities.
    assert models["A"].references[-1] == models["B"].references[-1]
    # Decided on B's understanding (the bug), the same answer gives the task up instead.
    wrong = decide(bots, answer, asked.session, again=False)
    assert "55555" not in said(wrong)
    assert heard(wrong) == "cancel"
    assert _response(wrong) == "utter_flow_cancelled"
    assert "order_id" not in state(wrong).slots


def test_a_task_begun_on_a_withdrawn_canary_is_understood_by_the_canarys_model(
        bots: TenantBots, models: dict[str, Understands]) -> None:
    bots.registry.install("acme", published("B"))  # B stable, A kept as the previous one
    bots.registry.install_canary("acme", published("A"), 50)
    asked = decide(bots, understood(bots, "e1", 1, ASK), Session(KEYS))
    assert state(asked).bot_version == "A"
    bots.registry.withdraw_canary("acme")  # rolled back: USER is routed to B again

    turn = decide(bots, understood(bots, "e2", 2, ANSWER), asked.session)

    assert turn.bot_version == "A"
    assert "55555" in said(turn)


def test_between_tasks_the_canary_understands_and_decides(
        bots: TenantBots, models: dict[str, Understands]) -> None:
    asked = asked_on_stable(bots)
    done = decide(bots, understood(bots, "e2", 2, "12345"), asked.session)
    assert state(done).active_flow is None and state(done).bot_version == "A"
    bots.registry.install_canary("acme", published("B"), 50)
    seen_by_a = list(models["A"].texts)

    turn = decide(bots, understood(bots, "e3", 3, ASK), done.session)

    assert turn.bot_version == "B"
    assert _response(turn) == "utter_greet" and heard(turn) == "greet"
    assert state(turn).active_flow is None  # B heard a greeting, not an order question
    assert models["A"].texts == seen_by_a  # nothing understood again
    assert models["B"].texts == [ASK]


def test_a_task_on_a_version_no_longer_held_goes_on_with_the_users_understanding(
        bots: TenantBots, models: dict[str, Understands]) -> None:
    bots.registry.install_canary("acme", published("B"), 50)
    gone = DialogueState(bot_version="gone", stack=(Frame("track_order"),),
                         requested_slot="order_id")
    session = Session(KEYS, dialogue=gone.to_bytes())

    turn = decide(bots, understood(bots, "e1", 1, ANSWER), session)

    assert turn.bot_version == "B"
    assert models["B"].texts == [ANSWER]  # the NLU step's call only
    assert models["A"].texts == []
    assert heard(turn) == "cancel"
    assert "55555" not in said(turn)


def test_a_message_its_own_versions_model_understood_is_left_as_it_came(
        models: dict[str, Understands]) -> None:
    item = Incoming(KEYS, {"event_id": "e1", "trace_id": "t", "timestamp": 1_000,
                           "payload": {"text": ASK, "client_msg_id": "m",
                                       "model_version": "nlu-aaaa", "intent": "x"}},
                    Kind.MESSAGE)
    assert understood_on(item, models["A"]) is item
    assert understood_on(item, None) is item
    again = understood_on(item, models["B"]).msg
    assert again["payload"]["intent"] == "greet"
    assert again["payload"]["model_version"] == "nlu-bbbb"
    assert again["payload"]["client_msg_id"] == "m" and again["event_id"] == "e1"
    assert models["A"].texts == []

