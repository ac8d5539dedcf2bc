"""Questions the dialogue step answers from the knowledge cache are billed to their tenant
(agents/dialogue/agent.py ``count_cached_answers``): the knowledge agent never sees them."""

from __future__ import annotations

from typing import cast

import pytest
from redis.asyncio.cluster import RedisCluster

from agents.dialogue.agent import count_cached_answers
from agents.dialogue.loader import load_bot
from agents.dialogue.manager import DialogueManager
from agents.dialogue.turns import Answer, ManagerFor, decide_turns
from streams.keys import ConversationKeys
from streams.usage import UsageCounter
from tests.unit.dialogue.test_turns import DEMO, message, sessions

OTHER = ConversationKeys("globex", "c-g")
A = ConversationKeys("acme", "c-a")
B = ConversationKeys("acme", "c-b")


@pytest.fixture(scope="module")
def demo() -> ManagerFor:
    manager = DialogueManager(load_bot(DEMO))
    return lambda _tenant, _user, _state: manager


def test_answers_taken_from_the_cache_are_billed_once_each(demo: ManagerFor) -> None:
    batch = [message(A, "a1", 1, "what is an overdraft?", "knowledge_question"),
             message(B, "b1", 1, "what is an overdraft?", "knowledge_question"),
             message(OTHER, "g1", 1, "what is an overdraft?", "knowledge_question"),
             message(A, "a2", 2, "hello", "greet")]
    cached = {"a1": Answer("Spending more than you have.", ("overdraft",))}
    decided = decide_turns(batch, sessions(A, B, OTHER), set(), cached, demo)
    usage = UsageCounter(cast(RedisCluster, None))

    count_cached_answers(usage, decided, [True] * len(decided), cached)
    # b1 and g1 went to the knowledge agent (it bills them); a2 asked nothing
    assert [t.event_id for t in decided if t.question is not None] == ["b1", "g1"]
    assert usage.pending() == {"acme": {"knowledge_requests": 1}}


def test_a_turn_the_store_did_not_record_is_not_billed(demo: ManagerFor) -> None:
    asked = message(A, "a1", 1, "what is an overdraft?", "knowledge_question")
    cached = {"a1": Answer("Spending more than you have.", ("overdraft",))}
    decided = decide_turns([asked], sessions(A), set(), cached, demo)
    usage = UsageCounter(cast(RedisCluster, None))
    count_cached_answers(usage, decided, [False], cached)  # a replay will bill it
    assert usage.pending() == {}
