"""The reference CRM and ticketing service (``parley crm``): a real HTTP API that the demo
bot's integrations call, with OAuth2 client credentials, idempotent writes and fault
injection. See :mod:`infra.crm.app` for the endpoints and docs/integrations.md."""

from __future__ import annotations

from infra.crm.app import CrmService, create_app
from infra.crm.errors import CrmError, CrmProblem
from infra.crm.settings import CrmSettings
from infra.crm.store import DEMO_CUSTOMER, CrmStore

__all__ = ["DEMO_CUSTOMER", "CrmError", "CrmProblem", "CrmService", "CrmSettings", "CrmStore",
           "create_app"]
