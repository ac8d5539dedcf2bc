"""What the reference CRM tells Parley without being asked: a ticket's outcome, POSTed to
the callback URL the ticket was opened with, and business events (an order shipped),
published on ``business.events``.

A callback is signed as every backend signs them for Parley (streams/proactive.py:
``X-Parley-Timestamp``, ``X-Parley-Signature: v1=HMAC-SHA256(secret, "{ts}.{body}")``)
with ``PARLEY_CRM_CALLBACK_SECRET``, and carries a ``callback_id`` made from the ticket,
so a resend is recognised. It is sent after an optional delay (a drill: "resolved in 30
seconds") and retried with jittered backoff (tenacity) while Parley does not take it (a
connection error, a 5xx); a 4xx is Parley refusing it, logged and not retried.

Business events go straight to Kafka (the CRM runs inside Parley's stack and has the
stack's broker settings), Avro-encoded as schemas/business_event.avsc, keyed
``tenant/customer``; a backend without a Kafka client POSTs them to the gateway's
``/events/{backend}`` instead (gateway/callbacks.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from confluent_kafka import Producer
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from infra.crm.errors import CallbackNotTaken
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.proactive import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_body
from streams.security import kafka_client_config
from streams.topics import BUSINESS_EVENTS

__all__ = ["CallbackSender", "Publish", "business_event", "kafka_publisher"]

logger = logging.getLogger(__name__)

#: Publishes one business event record (schemas/business_event.avsc).
Publish = Callable[[dict[str, Any]], Awaitable[None]]


class CallbackSender:
    """POSTs signed callbacks; ``attempts`` tries each with jittered backoff."""

    def __init__(self, secret: str, *, attempts: int = 5, timeout_s: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.secret, self.attempts, self.timeout_s = secret, attempts, timeout_s
        self.transport = transport  # tests: an in-process receiver
        self.tasks: set[asyncio.Task[int]] = set()

    def schedule(self, url: str, callback_id: str, status: str, data: Mapping[str, Any],
                 delay_s: float = 0.0) -> None:
        """Send it in the background, after ``delay_s``."""
        task = asyncio.create_task(self._later(url, callback_id, status, data, delay_s))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _later(self, url: str, callback_id: str, status: str,
                     data: Mapping[str, Any], delay_s: float) -> int:
        await asyncio.sleep(delay_s)
        try:
            return await self.send(url, callback_id, status, data)
        except Exception:
            logger.exception("crm.callback.failed callback_id=%s", callback_id)
            return 0

    async def send(self, url: str, callback_id: str, status: str,
                   data: Mapping[str, Any]) -> int:
        """Send now; returns Parley's HTTP status (after retries)."""
        body = json.dumps({"callback_id": callback_id, "status": status, "data": dict(data)},
                          separators=(",", ":")).encode()
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.attempts),
                    wait=wait_random_exponential(multiplier=0.2, max=5),
                    retry=retry_if_exception_type((CallbackNotTaken, httpx.TransportError)),
                    reraise=True):
                with attempt:
                    timestamp = str(int(time.time()))  # signed anew: fresh each attempt
                    answer = await client.post(url, content=body, headers={
                        "Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                        SIGNATURE_HEADER: sign_body(self.secret, timestamp, body)})
                    if answer.status_code >= 500:
                        raise CallbackNotTaken(f"Parley answered {answer.status_code}")
        level = logging.INFO if answer.status_code < 400 else logging.WARNING
        logger.log(level, "crm.callback.sent callback_id=%s status=%d reason=%s", callback_id,
                   answer.status_code, answer.text.strip()[:200])
        return answer.status_code


def business_event(tenant_id: str, customer_id: str, type_: str,
                   data: Mapping[str, str]) -> dict[str, Any]:
    """A BusinessEvent record (schemas/business_event.avsc)."""
    return {"event_id": f"crm-{uuid.uuid4().hex}", "tenant_id": tenant_id,
            "customer_id": customer_id, "type": type_,
            "data": {k: str(v) for k, v in data.items()},
            "timestamp": int(time.time() * 1000)}


def kafka_publisher(settings: Settings) -> Publish:
    """Publishes on the stack's ``business.events`` (created on first use: a CRM that never
    ships an order never connects to the broker)."""
    topic = settings.topic(BUSINESS_EVENTS)
    codec = codec_for("business_event", settings.schema_registry_url, topic)
    producer: list[Any] = []

    async def publish(event: dict[str, Any]) -> None:
        if not producer:
            producer.append(Producer(kafka_client_config(settings, acks="all")))
        key = f"{event['tenant_id']}/{event['customer_id']}"
        producer[0].produce(topic, key=key, value=codec.encode(event))
        left = await asyncio.to_thread(producer[0].flush, 10)
        if left:
            raise RuntimeError("the broker did not take the business event in 10 s")

    return publish
