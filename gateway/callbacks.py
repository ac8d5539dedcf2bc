"""Backends talking back: signed callbacks and business events on the gateway's API port.

``POST /callbacks/{backend}/{token}``: the outcome of asynchronous work an action started
(a ticket resolved). The URL is the one the action gave the backend
(streams/proactive.py: the token is Parley's signed correlation token naming the
conversation); the body is JSON::

    {"callback_id": "cb-123", "status": "resolved", "data": {"ticket_id": "T-1", ...}}

It becomes a ConversationNotice for that conversation (response
``utter_callback_<action>_<status>``, its fields filled from ``data`` and ``status``) on
``conversation.notices``, which the dialogue step says in the conversation.

``POST /events/{backend}``: a business event, for backends without a Kafka client::

    {"event_id": "ev-1", "tenant_id": "t1", "customer_id": "u7", "type": "order_shipped",
     "data": {"order_id": "12345"}}

It goes to ``business.events`` as a BusinessEvent (schemas/business_event.avsc), keyed
``tenant/customer``. ``PARLEY_CALLBACK_TENANTS_<BACKEND>`` (comma-separated) limits the
tenants a backend may publish for.

Both are signed by the backend (``X-Parley-Timestamp``, ``X-Parley-Signature``: see
streams/proactive.py) with its secret ``PARLEY_CALLBACK_SECRET_<BACKEND>``. Refused with
the reason in the body and nothing published: 401 (no or wrong signature, a timestamp
more than five minutes off, a replayed callback or event id), 403 (a token Parley did not
issue, expired, or issued to another backend; a tenant the backend may not publish for),
400 (a body that is not one of the above), 413 (over 64 KB); 503 when the broker did not
take it (the backend retries: its id is released). 202 when published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import Counter
from redis.asyncio.cluster import RedisCluster
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api import read_body
from kernel.settings import Settings
from streams.codecs import AvroCodec, codec_for
from streams.keys import validate_id
from streams.proactive import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackRefused,
    CallbackSettings,
    ReplayGuard,
    notice_event,
    read_callback_token,
    verify_signature,
)
from streams.topics import BUSINESS_EVENTS, CONVERSATION_NOTICES

__all__ = ["MAX_BODY_BYTES", "Callbacks", "Send", "business_event", "callback_notice",
           "callbacks_for"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_NAME = re.compile(r"[a-z0-9_]{1,64}")
_BACKEND = re.compile(r"[A-Za-z0-9_-]{1,64}")

CALLBACKS = Counter("parley_callbacks_total",
                    "Backend callbacks and business events the gateway took or refused.",
                    ["route", "outcome"])

#: Produces one record: ``(topic, key, value)``; returns once the broker holds it.
Send = Callable[[str, str, bytes], Awaitable[Any]]


def callback_notice(token_claims: Any, body: Mapping[str, Any], backend: str,
                    now_ms: int) -> dict[str, Any]:
    """The ConversationNotice of a callback body (``ValueError`` on a malformed body)."""
    callback_id, status = body.get("callback_id"), body.get("status", "done")
    data = body.get("data", {})
    if not isinstance(callback_id, str) or not 1 <= len(callback_id) <= 200:
        raise ValueError("callback_id must be a string of 1-200 characters")
    if not isinstance(status, str) or not _NAME.fullmatch(status):
        raise ValueError("status must be 1-64 of a-z 0-9 _")
    if not isinstance(data, dict):
        raise ValueError("data must be a JSON object")
    digest = hashlib.sha256(f"{backend}\0{callback_id}".encode()).hexdigest()[:32]
    return notice_event(f"cb-{digest}", token_claims.tenant_id, token_claims.conversation_id,
                        kind="callback",
                        response=f"utter_callback_{token_claims.action}_{status}",
                        data={**data, "status": status}, user_id=token_claims.user_id,
                        channel=token_claims.channel, timestamp_ms=now_ms)


def business_event(body: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The BusinessEvent of a body (``ValueError`` on a malformed one)."""
    for name in ("event_id", "tenant_id", "customer_id", "type"):
        if not isinstance(body.get(name), str):
            raise ValueError(f"{name} must be a string")
    event_id = body["event_id"]
    if not 1 <= len(event_id) <= 200:
        raise ValueError("event_id must have 1-200 characters")
    validate_id("tenant id", body["tenant_id"])
    validate_id("customer id", body["customer_id"])
    if not _NAME.fullmatch(body["type"]):
        raise ValueError("type must be 1-64 of a-z 0-9 _ (like order_shipped)")
    data = body.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str | int | float) for v in
                                             data.values()):
        raise ValueError("data must be a JSON object of strings and numbers")
    timestamp = body.get("timestamp", now_ms)
    if not isinstance(timestamp, int):
        raise ValueError("timestamp must be epoch milliseconds")
    return {"event_id": event_id, "tenant_id": body["tenant_id"],
            "customer_id": body["customer_id"], "type": body["type"],
            "data": {str(k): str(v) for k, v in data.items()}, "timestamp": timestamp}


class Callbacks:
    """The routes; ``send`` produces to the bus (the gateway's producer)."""

    def __init__(self, settings: CallbackSettings, redis: RedisCluster, send: Send, *,
                 notices_topic: str, notice_codec: AvroCodec, events_topic: str,
                 event_codec: AvroCodec, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self._send, self._clock = settings, send, clock
        self._guard = ReplayGuard(redis)
        self._env = os.environ if environ is None else environ
        self._notices, self._notice_codec = notices_topic, notice_codec
        self._events, self._event_codec = events_topic, event_codec

    @property
    def routes(self) -> list[BaseRoute]:
        return [Route("/callbacks/{backend}/{token}", self.callback, methods=["POST"]),
                Route("/events/{backend}", self.event, methods=["POST"])]

    async def callback(self, request: Request) -> Response:
        backend, token = request.path_params["backend"], request.path_params["token"]
        try:
            body = await self._verified(request, backend)
            claims = read_callback_token(self.settings, token, backend, self._clock())
            notice = callback_notice(claims, body, backend, int(self._clock() * 1000))
            return await self._publish("callback", backend, str(body["callback_id"]),
                                       self._notices, claims.conversation_id,
                                       self._notice_codec.encode(notice),
                                       {"event_id": notice["event_id"]})
        except CallbackRefused as exc:
            return _refused("callback", backend, exc)
        except ValueError as exc:
            return _refused("callback", backend, CallbackRefused(400, str(exc)))

    async def event(self, request: Request) -> Response:
        backend = request.path_params["backend"]
        try:
            body = await self._verified(request, backend)
            event = business_event(body, int(self._clock() * 1000))
            allowed = self._env.get(CallbackSettings.backend_variable(
                CallbackSettings.TENANTS_PREFIX, backend), "")
            if allowed and event["tenant_id"] not in {t.strip() for t in allowed.split(",")}:
                raise CallbackRefused(403, f"{backend!r} may not publish for tenant "
                                           f"{event['tenant_id']!r}")
            return await self._publish("event", backend, event["event_id"], self._events,
                                       f"{event['tenant_id']}/{event['customer_id']}",
                                       self._event_codec.encode(event),
                                       {"event_id": event["event_id"]})
        except CallbackRefused as exc:
            return _refused("event", backend, exc)
        except ValueError as exc:  # InvalidIdError included
            return _refused("event", backend, CallbackRefused(400, str(exc)))

    async def _verified(self, request: Request, backend: str) -> dict[str, Any]:
        """The JSON body of a request signed by ``backend``, not seen before."""
        if not _BACKEND.fullmatch(backend):
            raise CallbackRefused(404, "no such backend")
        raw = await read_body(request, MAX_BODY_BYTES)
        if raw is None:
            raise CallbackRefused(413, f"the body is over {MAX_BODY_BYTES} bytes")
        verify_signature(CallbackSettings.backend_secret(backend, self._env),
                         request.headers.get(TIMESTAMP_HEADER),
                         request.headers.get(SIGNATURE_HEADER), raw, self._clock())
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CallbackRefused(400, "the body is not JSON") from exc
        if not isinstance(body, dict):
            raise CallbackRefused(400, "the body is not a JSON object")
        return body

    async def _publish(self, route: str, backend: str, once_id: str, topic: str, key: str,
                       value: bytes, answer: dict[str, str]) -> Response:
        if not await self._guard.first(backend, f"{route}:{once_id}"):
            raise CallbackRefused(401, "replayed: this id was already taken")
        try:
            await self._send(topic, key, value)
        except Exception as exc:  # the broker did not take it: the backend retries
            await self._guard.forget(backend, f"{route}:{once_id}")
            logger.warning("callbacks.publish.failed route=%s backend=%s error=%s",
                           route, backend, exc)
            CALLBACKS.labels(route, "unavailable").inc()
            return PlainTextResponse("could not publish now: retry\n", status_code=503)
        CALLBACKS.labels(route, "accepted").inc()
        logger.info("callbacks.accepted route=%s backend=%s key=%s", route, backend, key)
        return JSONResponse({"accepted": True, **answer}, status_code=202)


def callbacks_for(settings: Settings, redis: RedisCluster, send: Send) -> Callbacks:
    """The gateway's callbacks, on its settings' topics (PARLEY_CALLBACK_* from the
    environment: :class:`~streams.proactive.CallbackSettings`)."""
    registry = settings.schema_registry_url
    notices, events = settings.topic(CONVERSATION_NOTICES), settings.topic(BUSINESS_EVENTS)
    return Callbacks(CallbackSettings.from_env(), redis, send, notices_topic=notices,
                     notice_codec=codec_for("conversation_notice", registry, notices),
                     events_topic=events,
                     event_codec=codec_for("business_event", registry, events))


def _refused(route: str, backend: str, exc: CallbackRefused) -> Response:
    CALLBACKS.labels(route, f"refused_{exc.status}").inc()
    logger.info("callbacks.refused route=%s backend=%s status=%d reason=%s", route,
                backend[:64], exc.status, exc.reason)
    return PlainTextResponse(exc.reason + "\n", status_code=exc.status)


