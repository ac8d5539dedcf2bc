"""The chat session without sockets: replay after last_seq, dedup by seq, replies held
during a replay; and, fuzzed, that no sequence of events raises or sends a seq twice."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.session import ChatSession


def reply(seq: int) -> dict[str, Any]:
    return {"event_id": f"e{seq}", "seq": seq,
            "payload": {"text": f"r{seq}", "client_msg_id": f"m{seq}"}}


def seqs(frames: list[str]) -> list[int]:
    return [json.loads(f)["seq"] for f in frames]


def test_live_replies_are_sent_once_each() -> None:
    chat = ChatSession()
    assert seqs(chat.on_replies([reply(1), reply(2)])) == [1, 2]
    assert seqs(chat.on_replies([reply(2), reply(3)])) == [3]  # 2 came twice (reprocessed)
    assert chat.duplicates == 1


def test_a_replay_sends_what_follows_last_seq_and_holds_live_replies_meanwhile() -> None:
    chat = ChatSession()
    assert chat.begin_replay(3) == 3  # read the outbox after 3
    assert chat.on_replies([reply(6)]) == []  # live, during the replay: held
    frames = chat.end_replay([reply(4), reply(5), reply(6)])  # 6 is in the outbox too
    assert seqs(frames) == [4, 5, 6]
    assert seqs(chat.on_replies([reply(6), reply(7)])) == [7]


def test_a_resume_with_an_older_last_seq_never_sends_again_what_was_sent() -> None:
    chat = ChatSession()
    chat.on_replies([reply(1), reply(2)])
    assert chat.begin_replay(0) == 2
    assert seqs(chat.end_replay([reply(1), reply(2), reply(3)])) == [3]


def test_a_failed_replay_still_releases_the_held_replies() -> None:
    chat = ChatSession()
    chat.begin_replay(0)
    chat.on_replies([reply(2)])
    assert seqs(chat.end_replay([])) == [2]
    assert not chat.replaying


def test_a_resume_during_a_replay_sends_everything_at_the_last_ones_end() -> None:
    chat = ChatSession()
    chat.begin_replay(0)
    chat.begin_replay(0)
    assert chat.end_replay([reply(1)]) == []
    chat.on_replies([reply(3)])
    assert seqs(chat.end_replay([reply(1), reply(2)])) == [1, 2, 3]


events = st.lists(st.one_of(
    st.tuples(st.just("live"), st.lists(st.integers(0, 30), max_size=5)),
    st.tuples(st.just("begin"), st.integers(-5, 30)),
    st.tuples(st.just("end"), st.lists(st.integers(0, 30), max_size=8)),
), max_size=40)


@given(events)
def test_no_sequence_of_events_raises_and_seq_strictly_increases_on_output(
    steps: list[tuple[str, Any]],
) -> None:
    chat = ChatSession()
    sent: list[int] = []
    for kind, arg in steps:
        if kind == "live":
            sent += seqs(chat.on_replies([reply(s) for s in sorted(arg)]))
        elif kind == "begin":
            assert chat.begin_replay(arg) >= max(arg, 0)
        else:
            sent += seqs(chat.end_replay([reply(s) for s in sorted(arg)]))
    assert all(a < b for a, b in itertools.pairwise(sent)), sent
    assert chat.replaying >= 0
