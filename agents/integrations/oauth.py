"""OAuth2 client-credentials tokens for a backend, fetched once and shared.

A token is fetched on first use, kept, and renewed ``refresh_margin_s`` before it
expires, so no call presents a token about to lapse; concurrent calls that find no valid
token wait for the one fetch (a lock) rather than each asking the token endpoint. A 401
from the API (a token revoked early, a restarted backend) drops the token: the next call
fetches a new one. The grant is a plain form POST (RFC 6749 §4.4.2) with the client's
credentials in HTTP Basic (``client_secret_basic``, the method every server supports):
too small a protocol to bring in an OAuth library for. A token endpoint that cannot be
reached raises :class:`~agents.actions.ActionUnavailable`; one that refuses the client,
:class:`~agents.actions.ActionFailed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from agents.actions.errors import ActionFailed, ActionUnavailable
from agents.integrations.config import OAuth2Config

__all__ = ["TokenSource"]


@dataclass(slots=True)
class _Token:
    value: str
    renew_at: float


class TokenSource:
    def __init__(self, config: OAuth2Config, base_url: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.url = config.token_url if config.token_url.startswith(("http://", "https://")) \
            else base_url + config.token_url
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, client: httpx.AsyncClient) -> str:
        """A valid token, fetched when there is none or it is due for renewal."""
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token.value
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = self._token = await self._fetch(client)
            return token.value

    def invalidate(self, value: str) -> None:
        """The API refused ``value``: fetch a new token next time."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _fetch(self, client: httpx.AsyncClient) -> _Token:
        form = {"grant_type": "client_credentials"}
        if self.config.scope:
            form["scope"] = self.config.scope
        try:
            response = await client.post(
                self.url, data=form, auth=(self.config.client_id, self.config.client_secret))
        except httpx.HTTPError as exc:
            raise ActionUnavailable(f"token endpoint: {type(exc).__name__}: {exc}") from exc
        self.fetches += 1
        if response.status_code >= 500 or response.status_code == 429:
            raise ActionUnavailable(f"token endpoint answered {response.status_code}")
        if response.status_code != 200:  # the client is refused: a configuration problem
            raise ActionFailed(f"token endpoint refused the client: {response.status_code} "
                               f"{response.text[:200]}")
        try:
            body = response.json()
            value = str(body["access_token"])
            expires_in = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise ActionUnavailable("token endpoint: an answer without access_token") from exc
        margin = min(self.config.refresh_margin_s, expires_in / 2)
        return _Token(value, self._clock() + expires_in - margin)
