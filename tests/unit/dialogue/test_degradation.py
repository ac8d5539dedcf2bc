"""Degradation levels: how a tenant's level is decided (streams/degradation.py) and what
each level changes in a turn (agents/dialogue/degradation.py, through decide_turns)."""

from __future__ import annotations

import json

from agents.dialogue.degradation import MAINTENANCE_REPLY, NOTICES, TOLD_SLOT
from agents.dialogue.sessions import Session
from agents.dialogue.turns import Answer, LevelFor, ManagerFor, decide_turns
from streams.degradation import STALE_AFTER_MS, Level, Snapshot, TenantLevel, read_snapshot
from streams.keys import ConversationKeys
from tests.unit.dialogue.test_turns import A, B, demo, message, sessions, state

__all__ = ["demo"]  # the fixture, re-exported for pytest

NOW = 10_000_000


def report(is_open: bool, at_ms: int = NOW) -> str:
    return json.dumps({"open": is_open, "at_ms": at_ms})


def forced(level: int, reason: str = "") -> str:
    return json.dumps({"level": level, "reason": reason, "at_ms": NOW})


# -- the level ------------------------------------------------------------------------

def test_an_open_breaker_on_any_worker_reduces_the_tenants_that_use_its_backend() -> None:
    snap = read_snapshot({"backend:crm:w1": report(False), "backend:crm:w2": report(True),
                          "backend:llm:w1": report(False)}, NOW)
    assert snap.open_backends == {"crm"}
    reduced = snap.level("acme", {"crm", "llm"})
    assert reduced.level is Level.REDUCED and not reduced.forced and "crm" in reduced.reason
    assert snap.level("other", {"llm"}).level is Level.FULL  # its bot does not use the CRM


def test_closing_breakers_bring_the_level_back_to_full() -> None:
    snap = read_snapshot({"backend:crm:w1": report(False), "backend:crm:w2": report(False)},
                         NOW)
    assert snap.level("acme", {"crm"}).level is Level.FULL


def test_a_stale_report_of_a_dead_worker_does_not_hold_the_level_down() -> None:
    snap = read_snapshot({"backend:crm:dead": report(True, NOW - STALE_AFTER_MS - 1)}, NOW)
    assert snap.level("acme", {"crm"}).level is Level.FULL


def test_a_forced_level_wins_over_the_breakers_both_ways() -> None:
    fields = {"backend:crm:w1": report(True), "tenant:acme": forced(1, "drill"),
              "tenant:beta": forced(4, "db upgrade")}
    snap = read_snapshot(fields, NOW)
    assert snap.level("acme", {"crm"}).level is Level.FULL
    beta = snap.level("beta", {"crm"})
    assert (beta.level, beta.forced, beta.reason) == (Level.MAINTENANCE, True, "db upgrade")
    assert snap.level("gamma", {"crm"}).level is Level.REDUCED


def test_unreadable_fields_are_skipped_not_fatal() -> None:
    snap = read_snapshot({"tenant:acme": "{not json", "tenant:beta": forced(9),
                          "backend:crm:w1": "[]", "tenant:ok": forced(3)}, NOW)
    assert set(snap.forced) == {"ok"} and snap.open_backends == frozenset()


# -- what a level changes in a turn ----------------------------------------------------

def at(level: Level) -> LevelFor:
    """Every tenant at ``level``, automatically."""
    return lambda _tenant: TenantLevel(level)


def acme_in_maintenance(tenant: str) -> TenantLevel:
    return TenantLevel(Level.MAINTENANCE if tenant == "acme" else Level.FULL)


def test_full_service_changes_nothing(demo: ManagerFor) -> None:
    batch = [message(A, "a1", 1, "where is my order 12345", "order_status")]
    plain = decide_turns(batch, sessions(A), set(), {}, demo)
    full = decide_turns(batch, sessions(A), set(), {}, demo, at(Level.FULL))
    assert full[0].action is not None and plain[0].action is not None
    assert full[0].action["payload"] == plain[0].action["payload"]
    assert full[0].session == plain[0].session and full[0].deferred is None


def test_reduced_says_so_once_with_the_next_reply(demo: ManagerFor) -> None:
    (first,) = decide_turns([message(A, "a1", 1)], sessions(A), set(), {}, demo,
                            at(Level.REDUCED))
    assert first.reply is not None
    text = first.reply["payload"]["text"]
    assert text.startswith(NOTICES[Level.REDUCED]) and len(text) > len(NOTICES[Level.REDUCED])
    assert state(first.session).slots[TOLD_SLOT] == 2
    (second,) = decide_turns([message(A, "a2", 2)], {A: first.session}, set(), {}, demo,
                             at(Level.REDUCED))
    assert second.reply is not None
    assert NOTICES[Level.REDUCED] not in second.reply["payload"]["text"]
    (back,) = decide_turns([message(A, "a3", 3)], {A: second.session}, set(), {}, demo,
                           at(Level.FULL))
    assert back.reply is not None
    assert back.reply["payload"]["text"].startswith(NOTICES[Level.FULL])
    assert state(back.session).slots[TOLD_SLOT] == 1


def test_static_fallback_calls_no_backend_and_offers_a_person(demo: ManagerFor) -> None:
    (turn,) = decide_turns([message(A, "a1", 1, "where is my order 12345", "order_status")],
                           sessions(A), set(), {}, demo, at(Level.STATIC))
    assert turn.action is None and turn.question is None
    assert turn.reply is not None
    assert turn.reply["payload"]["response"] == "utter_crm_unavailable"
    assert "can't reach your account" in turn.reply["payload"]["text"]
    assert state(turn.session).pending is None and state(turn.session).active_flow is None


def test_static_fallback_asks_no_knowledge_agent_but_uses_the_cache(demo: ManagerFor) -> None:
    asked = message(A, "a1", 1, "what is an overdraft?", "knowledge_question")
    (uncached,) = decide_turns([asked], sessions(A), set(), {}, demo, at(Level.STATIC))
    assert uncached.question is None and uncached.reply is not None
    assert state(uncached.session).pending is None
    cached = {"a1": Answer("Spending more than you have.", ("overdraft",))}
    (hit,) = decide_turns([asked], sessions(A), set(), cached, demo, at(Level.STATIC))
    assert hit.reply is not None and "Spending more than you have." in hit.reply["payload"]["text"]


def test_maintenance_keeps_the_message_and_tells_the_user(demo: ManagerFor) -> None:
    loaded = {**sessions(A, B)}
    batch = [message(A, "a1", 1, "where is my order 12345", "order_status"),
             message(A, "a2", 2), message(B, "b1", 1)]
    turns = decide_turns(batch, loaded, set(), {}, demo,
                         acme_in_maintenance)
    a1, a2, b1 = turns
    assert a1.deferred is batch[0].msg and a2.deferred is batch[1].msg
    assert a1.action is None and a1.reply is not None
    assert a1.reply["payload"]["text"] == (NOTICES[Level.MAINTENANCE] + "\n\n"
                                           + MAINTENANCE_REPLY)
    assert a2.reply is not None and a2.reply["payload"]["text"] == MAINTENANCE_REPLY
    assert state(a2.session).active_flow is None  # nothing was decided
    assert (a2.session.turns, a2.session.last_seq) == (2, 2)
    # B is another conversation of the same tenant: kept too; another tenant's is not
    assert b1.deferred is not None
    beta = ConversationKeys("beta", "c1")
    other = decide_turns([message(beta, "x1", 1)], {beta: Session(beta)}, set(), {}, demo,
                         acme_in_maintenance)
    assert other[0].deferred is None and other[0].reply is not None


def test_a_kept_message_replayed_after_maintenance_is_answered(demo: ManagerFor) -> None:
    (kept,) = decide_turns([message(A, "a1", 1, "where is my order 12345", "order_status")],
                           sessions(A), set(), {}, demo, at(Level.MAINTENANCE))
    replayed = message(A, "a1.d", 1, "where is my order 12345", "order_status")
    (later,) = decide_turns([replayed], {A: kept.session}, {"a1"}, {}, demo,
                            at(Level.FULL))
    assert later.action is not None and later.deferred is None
    assert state(later.session).slots[TOLD_SLOT] == 4  # told when the action's result says


def test_snapshot_defaults_to_full_service() -> None:
    assert Snapshot().level("acme", {"crm"}).level is Level.FULL


def test_a_forced_reduced_level_calls_no_backend_but_still_asks_the_knowledge_agent(
        demo: ManagerFor) -> None:
    forced = TenantLevel(Level.REDUCED, forced=True)
    (order,) = decide_turns([message(A, "a1", 1, "where is my order 12345", "order_status")],
                            sessions(A), set(), {}, demo, lambda _t: forced)
    assert order.action is None and order.reply is not None
    assert order.reply["payload"]["response"] == "utter_crm_unavailable"
    asked = message(B, "b1", 1, "what is an overdraft?", "knowledge_question")
    (question,) = decide_turns([asked], sessions(B), set(), {}, demo, lambda _t: forced)
    assert question.question is not None  # answered without the LLM (llm_allowed)
    (automatic,) = decide_turns([message(A, "a1", 1, "where is my order 12345",
                                         "order_status")], sessions(A), set(), {}, demo,
                                at(Level.REDUCED))
    assert automatic.action is not None  # the breakers decide which backend is down
