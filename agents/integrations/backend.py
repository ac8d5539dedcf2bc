"""One HTTP backend: a pooled httpx client, its OAuth2 token, retries and a circuit breaker.

What a call goes through, outermost first::

    retries (tenacity)  ─ only for idempotent calls; jittered exponential backoff;
    │                     never past the backend's deadline_s
    └─ breaker (purgatory) ─ open: ActionUnavailable at once, no request sent
       └─ token (oauth.py) ─ cached, renewed before expiry; a 401 drops it, one resend
          └─ httpx request   ─ per-attempt timeout_s (connect_timeout_s to connect)

* **Failures the breaker counts**: timeouts, connection errors, 5xx and 429 answers, a
  token endpoint that cannot be reached (:class:`~agents.actions.ActionUnavailable`).
  A 4xx answer is the backend working and saying no: it is returned to the action
  (which makes it an :class:`~agents.actions.ActionFailed`) and counts as a success.
  A cancelled call (the action's deadline) counts as a failure: the backend was too
  slow, which is what the breaker is there to notice.
* **Retries** only where repeating cannot do the effect twice: GET/PUT/DELETE, or a
  write the backend deduplicates by its idempotency key (``idempotent: true``), which
  carries the same key on every attempt.
* **A write without an answer** (the answer timed out, or the connection broke once the
  request was on its way) may have been done: it raises
  :class:`~agents.actions.ActionOutcomeUnknown`, never a plain "unavailable", and so
  does a later attempt's failure after one such (kind ``unknown``: the flow says it
  could not confirm it). A connection that was never made is "unavailable": nothing
  was sent.
* **The breaker library**: purgatory. It is written for asyncio (``async with`` around
  the call, no thread locks or Tornado coroutines, unlike pybreaker), keeps one circuit
  per name (one per backend here), has typed public events for logs and metrics, and
  can keep its state in Redis should workers ever need to share it. aiobreaker has not
  been released since 2021; circuitbreaker's decorator has no per-instance registry.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from prometheus_client import Counter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from agents.actions.errors import ActionFailed, ActionOutcomeUnknown, ActionUnavailable
from agents.integrations.config import BackendConfig
from agents.integrations.oauth import TokenSource

__all__ = ["BREAKER_EVENTS", "HttpBackend", "new_breakers"]

logger = logging.getLogger(__name__)

BREAKER_EVENTS = Counter("parley_integration_breaker_events_total",
                         "Circuit-breaker events per backend (state_changed, failed, recovered).",
                         ["backend", "event"])


def new_breakers() -> AsyncCircuitBreakerFactory:
    """A breaker registry (one circuit per backend name) that logs state changes."""
    factory = AsyncCircuitBreakerFactory()

    def hook(name: str, event_name: str, event: Any) -> None:
        BREAKER_EVENTS.labels(name, event_name).inc()
        if event_name == "state_changed":
            logger.warning("integration.breaker name=%s state=%s", name,
                           getattr(event, "state", "?"))

    factory.add_listener(hook)
    return factory


def _counts_as_failure(exc: BaseException) -> bool:
    return not isinstance(exc, ActionFailed) or isinstance(exc, ActionUnavailable)


#: What the breaker does not count. Every ``get_breaker`` call must pass it: purgatory sets
#: a circuit's exclusions anew on each call, so one without them (a state query while a
#: call is in flight) would make a 4xx count as a failure.
_EXCLUDE: list[Any] = [(ActionFailed, lambda exc: not _counts_as_failure(exc))]


class HttpBackend:
    def __init__(self, config: BackendConfig, breakers: AsyncCircuitBreakerFactory, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self._breakers = breakers
        self.client = httpx.AsyncClient(
            base_url=config.base_url, headers=dict(config.headers), transport=transport,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s
                                  or config.timeout_s),
            follow_redirects=False)
        self.tokens = TokenSource(config.auth, config.base_url) if config.auth else None

    async def aclose(self) -> None:
        await self.client.aclose()

    async def breaker_state(self) -> str:
        """``closed``, ``opened`` or ``half-opened`` (purgatory's names)."""
        breaker = await self._breakers.get_breaker(
            self.name, self.config.breaker_failures, self.config.breaker_reset_s,
            exclude=_EXCLUDE)
        return str(breaker.context.state)

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: Any = None, idempotency_key: str | None = None,
                   idempotent: bool = False) -> httpx.Response:
        """The backend's answer (2xx or 4xx); raises :class:`ActionUnavailable` when there
        is none to be had (down, too slow, 5xx, breaker open)."""
        headers = {self.config.idempotency_header: idempotency_key} if idempotency_key else {}
        attempts = 1 + (self.config.retries if idempotent else 0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts) | stop_after_delay(self.config.deadline_s),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_exception_type(ActionUnavailable), reraise=True)
        maybe_done = False  # an earlier attempt's write may have been done
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await self._attempt(method, path, params, json, headers)
                    except ActionOutcomeUnknown:
                        maybe_done = True
                        raise
        except OpenedState as exc:
            if maybe_done:
                raise ActionOutcomeUnknown(f"{self.name}: a write got no answer, then the "
                                           f"circuit opened") from exc
            raise ActionUnavailable(f"{self.name}: circuit open, calls are not sent") from exc
        except ActionUnavailable as exc:
            if maybe_done and not isinstance(exc, ActionOutcomeUnknown):
                raise ActionOutcomeUnknown(f"{self.name}: a write got no answer, then: "
                                           f"{exc}") from exc
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(self, method: str, path: str, params: dict[str, Any] | None,
                       json: Any, headers: dict[str, str]) -> httpx.Response:
        breaker = await self._breakers.get_breaker(
            self.name, self.config.breaker_failures, self.config.breaker_reset_s,
            exclude=_EXCLUDE)
        async with breaker:
            response = await self._send(method, path, params, json, headers)
            if response.status_code >= 500 or response.status_code == 429:
                raise ActionUnavailable(f"{self.name} answered {response.status_code}")
            return response

    async def _send(self, method: str, path: str, params: dict[str, Any] | None, json: Any,
                    headers: dict[str, str]) -> httpx.Response:
        for _ in range(2):  # a 401 drops the token; the resend carries a new one
            token = await self.tokens.get(self.client) if self.tokens else None
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                response = await self.client.request(method, path, params=params, json=json,
                                                     headers={**headers, **auth})
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise ActionUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise _no_answer(method)(f"{self.name}: no answer within "
                                         f"{self.config.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise _no_answer(method)(f"{self.name}: {type(exc).__name__}: {exc}") from exc
            if response.status_code != 401 or self.tokens is None or token is None:
                return response
            logger.info("integration.token.refused backend=%s", self.name)
            self.tokens.invalidate(token)
        return response


def _no_answer(method: str) -> type[ActionUnavailable]:
    """What a request that went out and got no answer is: a read that failed, or a write
    that may have been done."""
    return ActionUnavailable if method in ("GET", "HEAD", "OPTIONS") else ActionOutcomeUnknown
