"""OAuth2 client credentials (RFC 6749 §4.4) for the reference CRM.

A client posts its id and secret to ``/oauth/token`` (form fields or HTTP Basic, both of
which the RFC allows) and gets a bearer token with an expiry and the scopes it asked for,
within those it holds. Every API call presents the token; :meth:`TokenIssuer.check`
answers who it is, or refuses it: missing, unknown or expired is 401 with
``WWW-Authenticate: Bearer``, a valid token without the scope is 403 (RFC 6750 §3.1).

Tokens live in memory: a restarted CRM forgets them and clients get 401, which is what a
client must handle anyway (a token revoked early), by fetching a new one.
Written here rather than taken from a library because the CRM is the *server* side of the
grant and needs only these ~60 lines; the client side in Parley's integrations is httpx.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.crm.errors import CrmProblem

__all__ = ["ADMIN", "READ", "WRITE", "Client", "Grant", "TokenIssuer"]

READ, WRITE, ADMIN = "crm.read", "crm.write", "crm.admin"


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    secret: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Grant:
    """A token's holder, scopes and expiry (monotonic clock)."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float


class TokenIssuer:
    def __init__(self, clients: list[Client], ttl_s: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clients = {c.client_id: c for c in clients}
        self.ttl_s = ttl_s
        self._clock = clock
        self._tokens: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def issue(self, client_id: str, secret: str, scope: str | None) -> tuple[str, Grant]:
        """A new token for a client that proves its secret; 401 otherwise, 400 for a scope
        it does not hold."""
        client = self._clients.get(client_id)
        # compare_digest on both branches: no timing difference between unknown and wrong
        expected = client.secret if client is not None else secrets.token_hex(16)
        if not hmac.compare_digest(expected.encode(), secret.encode()) or client is None:
            raise CrmProblem(401, "invalid_client")
        asked = frozenset(scope.split()) if scope else client.scopes
        if not asked <= client.scopes:
            raise CrmProblem(400, f"invalid_scope: {' '.join(sorted(asked - client.scopes))}")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        grant = Grant(client_id, asked, now + self.ttl_s)
        with self._lock:
            self._tokens = {t: g for t, g in self._tokens.items() if g.expires_at > now}
            self._tokens[token] = grant
        return token, grant

    def check(self, authorization: str | None, scope: str) -> Grant:
        """The grant of an ``Authorization: Bearer <token>`` header that holds ``scope``."""
        if not authorization:
            raise CrmProblem(401, "missing bearer token")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise CrmProblem(401, "the Authorization header must be 'Bearer <token>'")
        with self._lock:
            grant = self._tokens.get(token.strip())
        if grant is None:
            raise CrmProblem(401, "invalid_token: unknown token")
        if grant.expires_at <= self._clock():
            raise CrmProblem(401, "invalid_token: expired")
        if scope not in grant.scopes:
            raise CrmProblem(403, f"insufficient_scope: needs {scope}")
        return grant
