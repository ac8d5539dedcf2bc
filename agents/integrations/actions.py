"""HTTP actions: integrations.yml's actions registered in an :class:`ActionRegistry`.

Each configured action becomes an ordinary registered action (docs/actions.md), so it
runs behind the existing interface: the action agent reads ``actions.requests``, the
registry validates the inputs (a pydantic model built from the configured types), calls
the function below with the action's deadline, validates its outputs, and the result
goes back on ``actions.results`` keyed by the conversation. The function:

1. fills the path's ``{placeholders}`` from the inputs (URL-quoted), the rest of the
   inputs go in the query (GET, DELETE) or the JSON body (writes), each at its ``to``
   path (``ticket.comment.body``: nested objects, as SaaS APIs want them); inputs with a
   ``context`` come from the call's context (the signed-in user), never from the flow;
   ``context: callback_url`` is where the backend POSTs the outcome of asynchronous work
   (the gateway's ``/callbacks/{backend}/{token}``, the token naming this conversation,
   signed: streams/proactive.py, gateway/callbacks.py), issued at the request's time so
   that every run of one request sends the same URL;
2. sends it through :class:`~agents.integrations.backend.HttpBackend`, with the
   request's event id as the idempotency key on every write, so a request run twice
   (a worker killed mid-call) does its effect once;
3. maps the answer: 2xx → the configured outputs, each read from its dotted path
   (``total.value``, ``blocked.0.status``); 4xx → :class:`ActionFailed` (kind
   ``failed``: the backend said no); no answer → :class:`ActionUnavailable` (kind
   ``unavailable``), which flows answer with their ``on_unavailable`` response.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from agents.actions.errors import ActionFailed
from agents.actions.registry import ActionContext, ActionRegistry
from agents.integrations.backend import HttpBackend, new_breakers
from agents.integrations.config import (
    DERIVED_CONTEXTS,
    FieldSpec,
    HttpAction,
    IntegrationsConfig,
    load_integrations,
)
from streams.proactive import CallbackClaims, CallbackSettings, callback_url

__all__ = ["Amount", "Integrations", "integrations_for", "model_of", "pick"]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MISSING = object()


class Amount(BaseModel):
    """A sum of money, as the ``amount`` slot type holds it: ``{value, currency}``."""

    model_config = ConfigDict(extra="ignore")
    value: float
    currency: str = Field(pattern=r"^[A-Z]{3}$")


_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool,
                          "amount": Amount, "object": dict[str, Any], "list": list[Any],
                          "any": Any}


def model_of(name: str, specs: tuple[FieldSpec, ...]) -> type[BaseModel]:
    """A pydantic model of ``specs``: the typed inputs or outputs of an action."""
    definitions: dict[str, Any] = {}
    for spec in specs:
        type_ = _TYPES[spec.type]
        if spec.pattern and spec.type == "string":
            type_ = Annotated[str, Field(pattern=spec.pattern)]
        definitions[spec.name] = (type_, ...) if spec.required else (type_ | None, None)
    model: type[BaseModel] = create_model(
        name, __config__=ConfigDict(extra="ignore"), **definitions)
    return model


def pick(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON document (``_MISSING`` when absent)."""
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


class Integrations:
    """The backends of one bot and its HTTP actions, registered in ``registry``."""

    def __init__(self, config: IntegrationsConfig, backends: Mapping[str, HttpBackend],
                 callbacks: CallbackSettings | None = None) -> None:
        self.config, self.backends = config, dict(backends)
        self.callbacks = callbacks

    def register(self, registry: ActionRegistry) -> None:
        for action in self.config.actions.values():
            flow_inputs = tuple(s for s in action.inputs if not s.context)
            backend = self.backends[action.backend]
            registry.register(
                action.name, self._function(action),
                inputs=model_of(f"{action.name}_inputs", flow_inputs),
                outputs=model_of(f"{action.name}_outputs", action.outputs),
                timeout_s=action.timeout_s or backend.config.deadline_s,
                description=action.description or f"{action.method} {backend.name}"
                                                  f"{action.path}",
                writes=action.writes)

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    def _function(self, action: HttpAction) -> Any:
        backend = self.backends[action.backend]

        async def call(inputs: BaseModel, ctx: ActionContext) -> dict[str, Any]:
            values = inputs.model_dump(mode="json", exclude_none=True)
            for spec in action.inputs:
                if spec.context in DERIVED_CONTEXTS:
                    values[spec.name] = self._callback_url(action, ctx)
                elif spec.context:
                    found = getattr(ctx, spec.context)
                    if not found and spec.required:
                        raise ActionFailed(f"the call has no {spec.context} for {spec.name!r}")
                    values[spec.name] = found
            path = _PLACEHOLDER.sub(
                lambda m: urllib.parse.quote(str(values.pop(m.group(1))), safe=""), action.path)
            values = _placed(values, {s.name: s.target or s.name for s in action.inputs})
            in_query = action.method in ("GET", "DELETE")
            response = await backend.call(
                action.method, path, params=values if in_query and values else None,
                json=None if in_query else values,
                idempotency_key=ctx.idempotency_key if action.writes else None,
                idempotent=action.idempotent)
            if response.status_code >= 400:
                raise ActionFailed(_refusal(action, response.status_code, response))
            try:
                body = response.json() if response.content else {}
            except ValueError as exc:
                raise ActionFailed(f"{backend.name} answered {response.status_code} without "
                                   f"JSON") from exc
            out: dict[str, Any] = {}
            for spec in action.outputs:
                value = pick(body, spec.source)
                if value is not _MISSING and value is not None:
                    out[spec.name] = value
            return out

        return call

    def _callback_url(self, action: HttpAction, ctx: ActionContext) -> str:
        if self.callbacks is None:
            self.callbacks = CallbackSettings.from_env()
        # Issued at the request's time, not the call's: a request run again (a worker
        # killed mid-call) sends the same URL, hence the same body under its key.
        return callback_url(self.callbacks, CallbackClaims(
            ctx.tenant_id, ctx.conversation_id, ctx.user_id, ctx.channel, action.name,
            action.backend), ctx.requested_at_ms / 1000 if ctx.requested_at_ms else None)


def _placed(values: dict[str, Any], targets: Mapping[str, str]) -> dict[str, Any]:
    """The inputs where they go: ``{"body": "x"}`` with target ``ticket.comment.body``
    becomes ``{"ticket": {"comment": {"body": "x"}}}``."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        *parents, leaf = targets.get(name, name).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _refusal(action: HttpAction, status: int, response: Any) -> str:
    if status in action.errors:
        return action.errors[status]
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = ""
    return f"{action.backend} answered {status}" + (f": {str(detail)[:300]}" if detail else "")


def integrations_for(folder: Path, environ: Mapping[str, str] | None = None
                     ) -> Integrations | None:
    """The integrations of the bot in ``folder`` (None without integrations.yml); raises
    :class:`~agents.integrations.errors.IntegrationConfigError` for a file with problems."""
    config = load_integrations(folder, environ)
    if config is None:
        return None
    breakers = new_breakers()
    # Read at start-up when an action asks for a callback URL: a bad secret stops the worker.
    wants_callbacks = any(spec.context in DERIVED_CONTEXTS
                          for action in config.actions.values() for spec in action.inputs)
    return Integrations(config, {name: HttpBackend(backend, breakers)
                                 for name, backend in config.backends.items()},
                        CallbackSettings.from_env(environ) if wants_callbacks else None)
