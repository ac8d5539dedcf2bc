"""What a /ws URL asks for: conversation and replay point (gateway/protocol.py)."""

from __future__ import annotations

import pytest

from gateway.protocol import parse_connection_params
from streams.keys import InvalidIdError


def test_explicit_parameters() -> None:
    params = parse_connection_params("/ws?conversation=c-1&last_seq=4")
    assert params == ("c-1", 4, False)
    assert (params.conversation_id, params.last_seq) == ("c-1", 4)


def test_defaults_are_a_new_conversation_without_replay() -> None:
    conversation, last_seq, debug = parse_connection_params("/ws")
    other, _, _ = parse_connection_params("/ws")
    assert not debug and last_seq == -1 and conversation.startswith("c-") and other != conversation


def test_the_url_cannot_choose_tenant_or_user() -> None:
    """Who connects comes from verified credentials (gateway/auth.py), never the URL."""
    params = parse_connection_params("/ws?tenant=acme&user=ann&conversation=c-1")
    assert params == ("c-1", -1, False)


@pytest.mark.parametrize("query", ["conversation=a%20b", "conversation=" + "c" * 129])
def test_bad_ids_are_refused(query: str) -> None:
    with pytest.raises(InvalidIdError):
        parse_connection_params(f"/ws?{query}")


def test_debug_is_asked_with_1_and_anything_but_0_or_1_is_refused() -> None:
    assert parse_connection_params("/ws?debug=1").debug
    assert not parse_connection_params("/ws?debug=0").debug
    with pytest.raises(ValueError, match="debug must be 0 or 1, not 'yes'"):
        parse_connection_params("/ws?debug=yes")


def test_a_replay_point_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="last_seq must be a whole number, not 'soon'"):
        parse_connection_params("/ws?last_seq=soon")


@pytest.mark.asyncio
@pytest.mark.parametrize("query", ["conversation=a%20b", "user=%7Bx%7D", "last_seq=soon"])
async def test_the_inline_baseline_refuses_the_same_bad_parameters(query: str) -> None:
    """The bench's inline server reads /ws URLs with the gateway's parser."""
    import json
    from typing import Any

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from benchmarks.inline import InlineServer
    from kernel.settings import Settings

    unused: Any = None  # the model and policy are not reached before the welcome
    server = InlineServer(unused, unused, Settings.from_env({}, gateway_port=0))
    await server.start()
    try:
        assert server._server is not None
        port = next(iter(server._server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/ws?{query}") as ws:
            error = json.loads(await ws.recv())
            assert (error["type"], error["code"]) == ("error", "bad_request")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        await server.close()
