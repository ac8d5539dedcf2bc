"""The gateway's API port (gateway/api.py): served in the running loop, routes mounted by
features, a port already taken refused with the setting's name; and the channel settings."""

from __future__ import annotations

import socket
from typing import Any, cast

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.api import ApiServer
from gateway.channels import Channels
from kernel.errors import ConfigError
from kernel.settings import Settings

pytestmark = pytest.mark.timeout(30)


async def echo(request: Request) -> Response:
    return PlainTextResponse((await request.body()).decode()[::-1])


@pytest.mark.asyncio
async def test_the_api_serves_healthz_and_mounted_routes_until_closed() -> None:
    server = ApiServer("127.0.0.1", 0)
    server.add_routes([Route("/callbacks/echo", echo, methods=["POST"])])
    await server.start()
    url = server.url
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{url}/healthz")).text == "ok\n"
            assert (await http.post(f"{url}/callbacks/echo", content=b"abc")).text == "cba"
            missing = await http.post(f"{url}/nothing/here")
            assert (missing.status_code, missing.text) == (404, "not found\n")
            assert (await http.get(f"{url}/callbacks/echo")).status_code == 405
    finally:
        await server.close()
        await server.close()  # idempotent
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(f"{url}/healthz")


@pytest.mark.asyncio
async def test_a_taken_port_is_refused_with_the_settings_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"{port}.*PARLEY_GATEWAY_API_PORT"):
            await ApiServer("127.0.0.1", port).start()


def test_channel_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings.from_env({
        "PARLEY_SLACK_SIGNING_SECRET": "s3cr3t-signing", "PARLEY_SLACK_BOT_TOKEN": "xoxb-s3cr3t",
        "PARLEY_TWILIO_ACCOUNT_SID": "AC123", "PARLEY_TWILIO_AUTH_TOKEN": "tw-s3cr3t"})
    shown = repr(settings)
    assert "s3cr3t" not in shown and "AC123" in shown
    assert settings.slack_bot_token == "xoxb-s3cr3t"


@pytest.mark.parametrize(("env", "name"), [
    ({"PARLEY_GATEWAY_API_PORT": "70000"}, "PARLEY_GATEWAY_API_PORT"),
    ({"PARLEY_SLACK_SIGNING_SECRET": "s"}, "PARLEY_SLACK_BOT_TOKEN"),
    ({"PARLEY_TWILIO_AUTH_TOKEN": "t"}, "PARLEY_TWILIO_ACCOUNT_SID"),
    ({"PARLEY_SLACK_API_URL": "slack.com/api"}, "PARLEY_SLACK_API_URL"),
    ({"PARLEY_SLACK_SIGNING_SECRET": "s3cr3t", "PARLEY_SLACK_BOT_TOKEN": "xoxb-s3cr3t",
      "PARLEY_SLACK_TENANT": "acme corp"}, "PARLEY_SLACK_TENANT"),
    ({"PARLEY_TWILIO_ACCOUNT_SID": "AC1", "PARLEY_TWILIO_AUTH_TOKEN": "s3cr3t",
      "PARLEY_TWILIO_TENANT": ""}, "PARLEY_TWILIO_TENANT"),
])
def test_channel_settings_that_cannot_work_stop_the_start(env: dict[str, str],
                                                          name: str) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        # The tenants are checked where ids are known (streams/keys.py), when a gateway
        # builds its channels; nothing connects before that.
        Channels(Settings.from_env(env), cast(Any, None), cast(Any, None), cast(Any, None))
    assert "s3cr3t" not in str(refused.value)
