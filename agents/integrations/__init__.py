"""Integrations: the HTTP actions a bot's flows call, configured in its integrations.yml.

The worker (parley/worker.py) builds :class:`Integrations` from the bot folder with
:func:`integrations_for` and registers its actions in the action agent's registry; the
agent then runs them like any action (docs/actions.md, docs/integrations.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agents.integrations.actions import Amount, Integrations, model_of, pick
from agents.integrations.backend import HttpBackend, new_breakers
from agents.integrations.config import (
    BackendConfig,
    FieldSpec,
    HttpAction,
    IntegrationsConfig,
    OAuth2Config,
    load_integrations,
    read_integrations,
)
from agents.integrations.errors import IntegrationConfigError

__all__ = ["Amount", "BackendConfig", "FieldSpec", "HttpAction", "HttpBackend",
           "IntegrationConfigError", "Integrations", "IntegrationsConfig", "OAuth2Config",
           "integrations_for", "load_integrations", "model_of", "new_breakers", "pick",
           "read_integrations"]


def integrations_for(folder: Path, environ: Mapping[str, str] | None = None
                     ) -> Integrations | None:
    """The integrations of the bot in ``folder`` (None without integrations.yml); raises
    :class:`IntegrationConfigError` for a file with problems."""
    config = load_integrations(folder, environ)
    if config is None:
        return None
    breakers = new_breakers()
    return Integrations(config, {name: HttpBackend(backend, breakers)
                                 for name, backend in config.backends.items()})
