"""The reference CRM and ticketing service: a small real HTTP API (FastAPI) over SQLite.

Parley talks to it only over HTTP, exactly as it would to Salesforce or Zendesk
(docs/integrations.md): OAuth2 client credentials, JSON, idempotency keys on writes. It
exists so the demo bot does real work and so tests and drills can make a backend slow,
failing or down (:mod:`infra.crm.faults`).

=======  =====================================  ==========  ======================
method   path                                   scope       what
=======  =====================================  ==========  ======================
POST     /oauth/token                           (secret)    a bearer token
GET      /customers/{id}                        crm.read    name, email
GET      /customers/{id}/accounts               crm.read    accounts and balances
GET      /customers/{id}/cards                  crm.read    cards and their status
POST     /customers/{id}/cards/block            crm.write   block cards (of a type)
POST     /customers/{id}/transfers              crm.write   send money
GET      /customers/{id}/transfers              crm.read    the money sent, oldest first
GET      /orders/{id}                           crm.read    status and shipping
POST     /tickets                               crm.write   open a ticket
GET      /tickets/{id}                          crm.read    a ticket
GET/PUT  /admin/faults (DELETE clears)          crm.admin   fault injection
POST     /admin/tickets/{id}/resolve            crm.admin   resolve; call Parley back
POST     /admin/orders/{id}/ship                crm.admin   ship; publish order_shipped
GET      /admin/counts                          crm.admin   rows written (drills)
GET      /healthz                               —           liveness
=======  =====================================  ==========  ======================

Every write needs an ``Idempotency-Key`` header (1-200 printable characters): the same
key returns the first answer, with ``Idempotent-Replayed: true``, and the effect happens
once (:meth:`infra.crm.store.CrmStore.idempotent`). Errors are ``{"detail": "..."}`` with
a 4xx status; a request the CRM cannot parse is 422 with FastAPI's field errors.

A ticket opened with a ``callback_url`` is answered 202 at once; when it is resolved
(``/admin/tickets/{id}/resolve``, optionally after ``delay_s``) the CRM POSTs the outcome
there, signed (:mod:`infra.crm.notify`). Shipping an order publishes an ``order_shipped``
business event for its customer.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from infra.crm.auth import ADMIN, READ, WRITE, Client, Grant, TokenIssuer
from infra.crm.errors import CrmProblem
from infra.crm.faults import FaultPlan, Faults
from infra.crm.notify import CallbackSender, Publish, business_event
from infra.crm.settings import CrmSettings
from infra.crm.store import CrmStore, fingerprint

__all__ = ["CrmService", "create_app"]

logger = logging.getLogger(__name__)

#: Ids as Parley's (streams/keys.py: user ids are customer ids here), with one letter or
#: digit at least (so never "." or "..").
_ID = r"^[A-Za-z0-9_.:@-]*[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_UNFAULTED = ("/healthz", "/oauth/token", "/admin/")
IdPath = Annotated[str, Path(pattern=_ID, max_length=128)]
Auth = Annotated[str | None, Header(alias="Authorization")]
Key = Annotated[str | None, Header(alias="Idempotency-Key")]


class Money(BaseModel):
    value: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class TransferIn(BaseModel):
    amount: Money
    recipient: str = Field(min_length=1, max_length=200)


class BlockIn(BaseModel):
    card_type: Literal["debit", "credit"] | None = None


class TicketIn(BaseModel):
    customer_id: str = Field(pattern=_ID, max_length=128)
    description: str = Field(min_length=1, max_length=5000)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    callback_url: str | None = Field(default=None, pattern=r"^https?://\S+$",
                                     max_length=4000)


class ResolveIn(BaseModel):
    resolution: str = Field(default="resolved", max_length=500)
    delay_s: float = Field(default=0.0, ge=0, le=3600)


class ShipIn(BaseModel):
    customer_id: str | None = Field(default=None, pattern=_ID, max_length=128)
    carrier: str = Field(default="DHL", min_length=1, max_length=50)
    tracking_number: str | None = Field(default=None, max_length=50)


class CrmService:
    """The CRM's state: its store, token issuer and faults (one per process)."""

    def __init__(self, settings: CrmSettings, database: str = ":memory:",
                 rng: random.Random | None = None, publish: Publish | None = None) -> None:
        self.settings = settings
        #: Callbacks to Parley (resolved tickets) and business events (shipped orders).
        self.callbacks = CallbackSender(settings.callback_secret)
        self.publish = publish
        self.store = CrmStore(database, enrol_unknown=settings.enrol_unknown)
        self.tokens = TokenIssuer(
            [Client(settings.client_id, settings.client_secret, frozenset({READ, WRITE})),
             Client(settings.admin_id, settings.admin_secret, frozenset({ADMIN}))],
            settings.token_ttl_s)
        self.faults = Faults()
        self.rng = rng or random.Random()


def create_app(service: CrmService) -> FastAPI:
    """The ASGI app of ``service``."""
    app = FastAPI(title="Parley reference CRM", version="1", docs_url="/docs",
                  redoc_url=None)
    store, tokens, faults = service.store, service.tokens, service.faults

    @app.exception_handler(CrmProblem)
    async def problem(request: Request, exc: CrmProblem) -> JSONResponse:
        headers = {"WWW-Authenticate": f'Bearer error="{exc.detail.split(":")[0]}"'} \
            if exc.status in (401, 403) else None
        return JSONResponse({"detail": exc.detail}, exc.status, headers=headers)

    @app.middleware("http")
    async def inject_faults(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path.startswith(_UNFAULTED):
            return await call_next(request)
        async with faults.holding():
            verdict = await faults.apply(service.rng)
            if verdict.status:
                return JSONResponse({"detail": verdict.detail}, verdict.status)
            response = await call_next(request)
            await faults.before_reply()
            return response

    def grant(authorization: str | None, scope: str) -> Grant:
        return tokens.check(authorization, scope)

    async def write(request: Request, who: Grant, key: str | None, effect: Any) -> JSONResponse:
        if key is None:
            raise CrmProblem(400, "a write needs an Idempotency-Key header")
        if not _KEY.fullmatch(key):
            raise CrmProblem(400, "Idempotency-Key: 1-200 printable ASCII characters")
        print_ = fingerprint(request.method, request.url.path, await request.body())
        status, body, replayed = store.idempotent(who.client_id, key, print_, effect)
        # One line per write: a drill or a test reads which calls were done, which replayed.
        logger.info("crm.write client=%s path=%s key=%s status=%d replayed=%s", who.client_id,
                    request.url.path, key, status, str(replayed).lower())
        return JSONResponse(body, status,
                            headers={"Idempotent-Replayed": "true" if replayed else "false"})

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/oauth/token")
    async def token(request: Request) -> JSONResponse:
        form = _form(await request.body())
        client_id, secret = _client_credentials(request.headers.get("Authorization"), form)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        try:
            value, given = tokens.issue(client_id, secret, form.get("scope"))
        except CrmProblem as exc:
            error = exc.detail.split(":")[0]
            return JSONResponse({"error": error, "error_description": exc.detail}, exc.status,
                                headers={"WWW-Authenticate": "Basic"} if exc.status == 401
                                else None)
        return JSONResponse({"access_token": value, "token_type": "Bearer",
                             "expires_in": tokens.ttl_s, "scope": " ".join(sorted(given.scopes))},
                            headers={"Cache-Control": "no-store"})

    @app.get("/customers/{customer_id}")
    async def customer(customer_id: IdPath, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, READ)
        return store.customer(customer_id)

    @app.get("/customers/{customer_id}/accounts")
    async def accounts(customer_id: IdPath, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, READ)
        found = store.accounts(customer_id)
        currencies = {a["balance"]["currency"] for a in found}
        total = ({"value": round(sum(a["balance"]["value"] for a in found), 2),
                  "currency": currencies.pop()} if len(currencies) == 1 else None)
        return {"customer_id": customer_id, "accounts": found, "total": total}

    @app.get("/customers/{customer_id}/cards")
    async def cards(customer_id: IdPath, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, READ)
        return {"customer_id": customer_id, "cards": store.cards(customer_id)}

    @app.post("/customers/{customer_id}/cards/block")
    async def block(customer_id: IdPath, body: BlockIn, request: Request,
                    authorization: Auth = None, idempotency_key: Key = None) -> JSONResponse:
        who = grant(authorization, WRITE)
        return await write(request, who, idempotency_key,
                           store.block_cards(customer_id, body.card_type))

    @app.post("/customers/{customer_id}/transfers")
    async def transfer(customer_id: IdPath, body: TransferIn, request: Request,
                       authorization: Auth = None, idempotency_key: Key = None) -> JSONResponse:
        who = grant(authorization, WRITE)
        cents = int(body.amount.value * 100)
        return await write(request, who, idempotency_key,
                           store.transfer(customer_id, cents, body.amount.currency,
                                          body.recipient))

    @app.get("/customers/{customer_id}/transfers")
    async def transfers(customer_id: IdPath, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, READ)
        return {"customer_id": customer_id, "transfers": store.transfers(customer_id)}

    @app.get("/orders/{order_id}")
    async def order(order_id: IdPath, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, READ)
        return store.order(order_id)

    @app.post("/tickets")
    async def open_ticket(body: TicketIn, request: Request, authorization: Auth = None,
                          idempotency_key: Key = None) -> JSONResponse:
        who = grant(authorization, WRITE)
        return await write(request, who, idempotency_key,
                           store.open_ticket(body.customer_id, body.description, body.email,
                                             body.callback_url))

    @app.get("/tickets/{ticket_id}")
    async def ticket(ticket_id: IdPath, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, READ)
        return store.ticket(ticket_id)

    @app.get("/admin/faults")
    async def get_faults(authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, ADMIN)
        return faults.describe()

    @app.put("/admin/faults")
    async def put_faults(plan: FaultPlan, authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, ADMIN)
        faults.set(plan)
        return faults.describe()

    @app.delete("/admin/faults")
    async def clear_faults(authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, ADMIN)
        faults.set(FaultPlan())
        return faults.describe()

    @app.post("/admin/tickets/{ticket_id}/resolve")
    async def resolve_ticket(ticket_id: IdPath, body: ResolveIn,
                             authorization: Auth = None) -> JSONResponse:
        grant(authorization, ADMIN)
        found, url = store.resolve_ticket(ticket_id)
        if url is not None:
            service.callbacks.schedule(url, f"{ticket_id}.resolved", "resolved",
                                       {"ticket_id": ticket_id, "resolution": body.resolution},
                                       body.delay_s)
        return JSONResponse({"ticket": found, "callback": "scheduled" if url else "none",
                             "delay_s": body.delay_s}, 202 if url else 200)

    @app.post("/admin/orders/{order_id}/ship")
    async def ship_order(order_id: IdPath, body: ShipIn,
                         authorization: Auth = None) -> dict[str, Any]:
        grant(authorization, ADMIN)
        tracking = body.tracking_number or f"JD{random.randrange(10**12):012d}"
        order = store.ship_order(order_id, body.customer_id, body.carrier, tracking)
        if service.publish is None:
            return {"order": order, "event": "none (no broker configured)"}
        event = business_event(service.settings.tenant_id, order["customer_id"],
                               "order_shipped", {"order_id": order_id,
                                                 "carrier": body.carrier,
                                                 "tracking_number": tracking})
        try:
            await service.publish(event)
        except Exception as exc:
            raise CrmProblem(503, f"the order is shipped but its event was not published: "
                                  f"{exc}") from exc
        return {"order": order, "event": event["event_id"]}

    @app.get("/admin/counts")
    async def counts(authorization: Auth = None) -> dict[str, int]:
        grant(authorization, ADMIN)
        return {table: store.count(table) for table in ("transfers", "tickets", "idempotency")}

    return app


def _form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the token request's, RFC 6749 §4.4.2)."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CrmProblem(400, "invalid_request: the body must be a form") from exc
    return dict(pairs)


def _client_credentials(authorization: str | None, form: dict[str, str]) -> tuple[str, str]:
    """The client's id and secret: HTTP Basic (client_secret_basic) or the form's fields."""
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        client_id, _, secret = decoded.partition(":")
        return urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
    return form.get("client_id", ""), form.get("client_secret", "")
