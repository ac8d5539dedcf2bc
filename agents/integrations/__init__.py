"""Integrations: the HTTP actions a bot's flows call, configured in its integrations.yml.

The worker (parley/worker.py) builds :class:`Integrations` from the bot folder with
:func:`integrations_for` and registers its actions in the action agent's registry; the
agent then runs them like any action (docs/actions.md, docs/integrations.md).

Modules load when first used, so ``parley validate`` (which reads integrations.yml with
:mod:`agents.integrations.config`) needs none of httpx, pydantic, tenacity or purgatory.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Amount", "BackendConfig", "FieldSpec", "HttpAction", "HttpBackend",
           "IntegrationConfigError", "Integrations", "IntegrationsConfig", "OAuth2Config",
           "integrations_for", "load_integrations", "model_of", "new_breakers", "pick",
           "read_integrations", "validate_integrations"]

_WHERE = {
    "Amount": "actions", "Integrations": "actions", "integrations_for": "actions",
    "model_of": "actions", "pick": "actions",
    "HttpBackend": "backend", "new_breakers": "backend",
    "BackendConfig": "config", "FieldSpec": "config", "HttpAction": "config",
    "IntegrationsConfig": "config", "OAuth2Config": "config",
    "load_integrations": "config", "read_integrations": "config",
    "validate_integrations": "config",
    "IntegrationConfigError": "errors",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agents.integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agents.integrations.{module}"), name)
