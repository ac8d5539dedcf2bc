"""The gateway's second HTTP port: an ASGI app for POST endpoints (webhooks, callbacks).

The ``/ws`` port stays on websockets, chosen for its measured performance with
thousands of idle sockets (docs/benchmarks.md); but websockets' own HTTP handling
answers GET requests only, and webhooks (Slack's Events API, Twilio's SMS) POST.
So each gateway process also serves a small Starlette app, run by uvicorn on the
same event loop, on ``PARLEY_GATEWAY_API_PORT`` (8081; 0: any free port).

Routes are mounted, not hard-wired: :func:`create_app` takes the routes of each
feature (gateway/channels/ gives the webhooks'; backend callbacks and the agent
console add theirs the same way), and :meth:`ApiServer.add_routes` adds more
before the server starts. ``/healthz`` is always there.

uvicorn is embedded through its ``Server`` class; its signal handling is turned
off (:class:`_EmbeddedServer`): the gateway process owns SIGTERM and SIGINT, and
stops this server from ``Gateway.close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator, Iterable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["ApiServer", "create_app", "read_body"]

logger = logging.getLogger(__name__)


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("not found\n", status_code=404)


def create_app(routes: Iterable[BaseRoute] = ()) -> Starlette:
    """The API app: ``/healthz`` plus ``routes``."""
    return Starlette(routes=[Route("/healthz", _healthz, methods=["GET"]), *routes],
                     exception_handlers={404: _not_found})


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the gateway process owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer:
    """Serves :func:`create_app`'s app on ``host:port`` inside the running event loop."""

    def __init__(self, host: str, port: int, routes: Iterable[BaseRoute] = ()) -> None:
        self.host = host
        self.app = create_app(routes)
        self._requested_port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    def add_routes(self, routes: Iterable[BaseRoute]) -> None:
        """Mount more routes (before :meth:`start`; later requests see them too)."""
        self.app.router.routes.extend(routes)

    async def start(self) -> None:
        """Bind and serve; returns once the port is listening. Raises ``OSError`` naming
        PARLEY_GATEWAY_API_PORT when the port cannot be bound.

        The socket is bound here and handed to uvicorn: uvicorn's own bind failure ends
        in ``sys.exit``, which would take the whole gateway down from inside a task."""
        try:
            sock = socket.create_server((self.host, self._requested_port), reuse_port=False)
        except OSError as exc:
            raise OSError(exc.errno, f"the gateway API cannot listen on {self.host}:"
                          f"{self._requested_port} (PARLEY_GATEWAY_API_PORT): "
                          f"{exc.strerror}") from exc
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False,
            server_header=False, timeout_graceful_shutdown=3,
        )  # fmt: skip
        server = _EmbeddedServer(config)
        self._server, self._socket = server, sock
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():  # a failure uvicorn logged; surface it here
                self._task.result()
                raise OSError(f"the gateway API did not start on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        logger.info("gateway.api.started url=%s", self.url)

    @property
    def port(self) -> int:
        assert self._socket is not None, "start() first"
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop accepting, let requests in progress finish (up to 3 s); idempotent."""
        server, task, self._server, self._task = self._server, self._task, None, None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def read_body(request: Request, limit: int) -> bytes | None:
    """The raw body of ``request`` (signatures are over its exact bytes); None when it is
    over ``limit`` bytes, checked as it streams in, not only by its Content-Length."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
