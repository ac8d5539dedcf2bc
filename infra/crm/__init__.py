"""The reference CRM and ticketing service (``parley crm``): a real HTTP API that the demo
bot's integrations call, with OAuth2 client credentials, idempotent writes and fault
injection. The app is :func:`infra.crm.app.create_app` (FastAPI: the ``crm`` extra); this
package imports only what needs no extra, so ``parley up`` reads the CRM's settings
without loading FastAPI. See docs/integrations.md."""

from __future__ import annotations

from infra.crm.errors import CrmError, CrmProblem
from infra.crm.settings import CrmSettings
from infra.crm.store import DEMO_CUSTOMER, CrmStore

__all__ = ["DEMO_CUSTOMER", "CrmError", "CrmProblem", "CrmSettings", "CrmStore"]
