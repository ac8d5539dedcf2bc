"""An OpenAI-compatible chat-completions client (``POST {base}/chat/completions``).

Transport and protocol problems are translated into the component's own
errors at this boundary, chained from the original:

* ``httpx.TimeoutException`` → :class:`LLMTimeout`
* connection errors, HTTP 5xx and 429 → :class:`LLMUnavailable`
* other HTTP errors (4xx: bad key, unknown model) → :class:`LLMClientError`
* a body that is not a completion → :class:`LLMMalformedOutput`

Token usage is what the endpoint reports in the completion's ``usage`` object
(``prompt_tokens``, ``completion_tokens``: its own tokenizer's count, the one it bills
by). A body without one gives zeros and ``usage_reported=False``; the service then
estimates (agents/knowledge/service.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from agents.knowledge.errors import LLMClientError, LLMMalformedOutput, LLMTimeout, LLMUnavailable

__all__ = ["ChatClient", "Completion"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = ""
    #: Whether the endpoint reported the token counts (else they are 0).
    usage_reported: bool = True


class ChatClient:
    def __init__(self, base_url: str, *, api_key: str = "", timeout_s: float = 15.0,
                 connect_timeout_s: float = 2.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, model: str, messages: Sequence[dict[str, str]], *,
                       max_tokens: int = 350, temperature: float = 0.0) -> Completion:
        body = {"model": model, "messages": list(messages), "max_tokens": max_tokens,
                "temperature": temperature}
        try:
            response = await self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise LLMTimeout(f"no answer from {self.base_url} in time ({exc!r})",
                             model=model) from exc
        except httpx.HTTPError as exc:  # connect refused, reset, protocol errors
            raise LLMUnavailable(f"{self.base_url}: {exc!r}", model=model) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise LLMUnavailable(f"HTTP {response.status_code}", model=model)
        if response.status_code >= 400:
            raise LLMClientError(f"HTTP {response.status_code}: {response.text[:200]}",
                                 model=model)
        return _parse(response, model)


def _parse(response: httpx.Response, model: str) -> Completion:
    try:
        data: Any = response.json()
    except ValueError as exc:
        raise LLMMalformedOutput("response body is not JSON", model=model) from exc
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"]
        usage = data.get("usage") or {}
        reported = "prompt_tokens" in usage or "completion_tokens" in usage
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise LLMMalformedOutput(f"not a chat completion ({exc!r})", model=model) from exc
    if not isinstance(text, str):
        raise LLMMalformedOutput("message content is not text", model=model)
    return Completion(text=text, model=str(data.get("model") or model),
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      finish_reason=str(choice.get("finish_reason") or ""),
                      usage_reported=reported)
