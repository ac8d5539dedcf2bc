"""A real WebSocket chat client for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection

from tests.tenants import token_for


def dev_token(http_url: str) -> str:
    """A token from a development-mode gateway (``GET /dev/token``; ``parley up``)."""
    with urllib.request.urlopen(f"{http_url.rstrip('/')}/dev/token", timeout=10) as response:
        token: str = json.loads(response.read())["token"]
        return token


class ChatClient:
    """Connects to a gateway's /ws and sorts incoming frames by type."""

    def __init__(self, base_url: str, *, tenant: str = "e2e", conversation: str | None = None,
                 user: str = "tester", last_seq: int | None = None,
                 token: str | None = None) -> None:
        """Connects as ``user`` of ``tenant`` (a test tenant, tests/tenants.py) with a token
        minted here, or with ``token`` when given (a development-mode token, say)."""
        params = {"conversation": conversation or f"c-{uuid.uuid4().hex[:12]}",
                  "token": token or token_for(tenant, user)}
        if last_seq is not None:
            params["last_seq"] = str(last_seq)
        self.conversation = params["conversation"]
        self.url = f"{base_url}/ws?{urlencode(params)}"
        self.frames: dict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self.welcome: dict[str, Any] = {}

    async def __aenter__(self) -> ChatClient:
        self.ws = await websockets.connect(self.url, max_size=None, compression=None)
        self._reader = asyncio.create_task(self._read())
        self.welcome = await self.next("welcome")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.ws:
            await self.ws.close()

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                frame = json.loads(data)
                await self.frames[frame["type"]].put(frame)

    async def send(self, text: str, client_msg_id: str | None = None) -> str:
        client_msg_id = client_msg_id or uuid.uuid4().hex[:16]
        await self.send_raw(json.dumps(
            {"type": "message", "text": text, "client_msg_id": client_msg_id}))
        return client_msg_id

    async def send_raw(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def next(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        return await asyncio.wait_for(self.frames[kind].get(), timeout)

    async def collect(self, kind: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        async def gather() -> list[dict[str, Any]]:
            return [await self.frames[kind].get() for _ in range(count)]
        return await asyncio.wait_for(gather(), timeout)

    def pending(self, kind: str) -> int:
        return self.frames[kind].qsize()
