"""What a /ws URL asks for: user, conversation and replay point."""

from __future__ import annotations

import pytest

from gateway.server import _connection_params
from streams.keys import ConversationKeys, InvalidIdError


def test_explicit_parameters() -> None:
    path = "/ws?tenant=acme&user=ann%40acme&conversation=c-1&last_seq=4"
    assert _connection_params(path) == ("ann@acme", ConversationKeys("acme", "c-1"), 4)


def test_defaults_are_a_new_user_and_conversation_of_the_demo_tenant() -> None:
    user, keys, last_seq = _connection_params("/ws")
    again, other, _ = _connection_params("/ws")
    assert keys.tenant_id == "demo" and last_seq == -1
    assert user.startswith("u-") and keys.conversation_id.startswith("c-")
    assert (again, other.conversation_id) != (user, keys.conversation_id)


@pytest.mark.parametrize("query", ["tenant=a%20b", "user=%7Bx%7D", "conversation=" + "c" * 129])
def test_bad_ids_are_refused(query: str) -> None:
    with pytest.raises(InvalidIdError):
        _connection_params(f"/ws?{query}")


def test_a_replay_point_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="last_seq must be a whole number, not 'soon'"):
        _connection_params("/ws?last_seq=soon")
