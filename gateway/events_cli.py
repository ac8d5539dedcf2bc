"""``parley events publish``: a business event for a backend without a Kafka client.

It POSTs the event to a gateway's ``/events/{backend}`` (gateway/callbacks.py), signed
with the backend's secret from ``PARLEY_CALLBACK_SECRET_<BACKEND>`` exactly as a backend
signs it (streams/proactive.py), so it doubles as a worked example of the signature and a
way to try a bot's ``utter_event_<type>`` responses by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import click
import httpx

from kernel.errors import ConfigError
from streams.proactive import SIGNATURE_HEADER, TIMESTAMP_HEADER, CallbackSettings, sign_body

__all__ = ["events", "publish_event"]


async def publish_event(url: str, backend: str, secret: str, event: Mapping[str, Any],
                        transport: httpx.AsyncBaseTransport | None = None) -> httpx.Response:
    """POST ``event`` to ``{url}/events/{backend}``, signed with ``secret``."""
    body = json.dumps(dict(event), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    async with httpx.AsyncClient(timeout=10, transport=transport) as client:
        return await client.post(f"{url.rstrip('/')}/events/{backend}", content=body, headers={
            "Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign_body(secret, timestamp, body)})


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    data: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write key=value", param_hint="--data")
        data[key] = value
    return data


@click.group()
def events() -> None:
    """Business events (docs/integrations.md)."""


@events.command()
@click.option("--url", envvar="PARLEY_CALLBACK_BASE_URL", default="http://127.0.0.1:8081",
              show_default=True, help="A gateway's API port (PARLEY_CALLBACK_BASE_URL).")
@click.option("--backend", required=True, help="Who publishes: its secret is "
              "PARLEY_CALLBACK_SECRET_<BACKEND>.")
@click.option("--tenant", required=True, help="The customer's tenant.")
@click.option("--customer", required=True, help="The customer: their conversations' user id.")
@click.option("--type", "type_", required=True, help="order_shipped, payment_failed, ...")
@click.option("--data", "-d", multiple=True, help="key=value for the response's {fields}.")
@click.option("--event-id", default="", help="Default: a new one.")
def publish(url: str, backend: str, tenant: str, customer: str, type_: str,
            data: tuple[str, ...], event_id: str) -> None:
    """Publish a business event through the gateway."""
    secret = CallbackSettings.backend_secret(backend)
    if secret is None:
        name = CallbackSettings.backend_variable(CallbackSettings.SECRET_PREFIX, backend)
        raise ConfigError(name, "", "the backend's signing secret (the gateways' value)")
    event = {"event_id": event_id or f"cli-{uuid.uuid4().hex}", "tenant_id": tenant,
             "customer_id": customer, "type": type_, "data": _pairs(data)}
    try:
        answer = asyncio.run(publish_event(url, backend, secret, event))
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    click.echo(f"{answer.status_code} {answer.text.strip()}")
    if answer.status_code >= 300:
        raise SystemExit(1)
