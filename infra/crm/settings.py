"""Settings of the reference CRM (``PARLEY_CRM_*``), same conventions as :mod:`kernel.settings`.

The CRM is a stand-in for a real business system (Salesforce, Zendesk, a core banking
API): it has its own credentials, which Parley's integrations read from *their*
environment (``CRM_CLIENT_SECRET``), exactly as they would a vendor's. The defaults are
for a developer's machine; a shared deployment sets its own secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kernel.errors import ConfigError
from kernel.settings import EnvSettings, setting

__all__ = ["CrmSettings"]


@dataclass(frozen=True)
class CrmSettings(EnvSettings):
    """Knobs of ``parley crm``. Build with :meth:`from_env`."""

    host: str = setting("127.0.0.1", "PARLEY_CRM_HOST", "Interface the CRM listens on.")
    port: int = setting(8090, "PARLEY_CRM_PORT", "TCP port of the CRM (0: any free port).")
    db_path: str = setting(
        "", "PARLEY_CRM_DB",
        "SQLite file of the CRM's data; empty: <PARLEY_DATA_DIR>/crm.sqlite3 (':memory:' "
        "keeps it in memory). Seeded with the demo data when new.")
    client_id: str = setting("parley", "PARLEY_CRM_CLIENT_ID",
                             "OAuth2 client id that Parley's integrations use.")
    client_secret: str = setting("parley-dev-secret", "PARLEY_CRM_CLIENT_SECRET",
                                 "Its secret (the integrations read it as CRM_CLIENT_SECRET).")
    admin_id: str = setting("crm-admin", "PARLEY_CRM_ADMIN_ID",
                            "OAuth2 client id of the admin credential (fault injection).")
    admin_secret: str = setting("crm-admin-dev-secret", "PARLEY_CRM_ADMIN_SECRET",
                                "Its secret.")
    token_ttl_s: int = setting(3600, "PARLEY_CRM_TOKEN_TTL_S",
                               "Seconds an access token is valid for.")
    enrol_unknown: bool = setting(
        True, "PARLEY_CRM_ENROL_UNKNOWN",
        "A customer id the CRM has never seen gets a copy of the demo customer's accounts "
        "and cards on first use (so any chat user of the demo has data); off: 404.")

    callback_secret: str = setting(
        "crm-callback-dev-secret", "PARLEY_CRM_CALLBACK_SECRET",
        "Signs the callbacks the CRM POSTs to Parley (a resolved ticket); Parley's gateways "
        "hold it as PARLEY_CALLBACK_SECRET_CRM.")
    tenant_id: str = setting(
        "demo", "PARLEY_CRM_TENANT",
        "The Parley tenant whose customers this CRM holds: its business events name it.")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("PARLEY_CRM_PORT", str(self.port), "a port 0-65535")
        if self.token_ttl_s < 1:
            raise ConfigError("PARLEY_CRM_TOKEN_TTL_S", str(self.token_ttl_s),
                              "a whole number of seconds >= 1")
        for name, value in (("PARLEY_CRM_CLIENT_SECRET", self.client_secret),
                            ("PARLEY_CRM_ADMIN_SECRET", self.admin_secret),
                            ("PARLEY_CRM_CALLBACK_SECRET", self.callback_secret)):
            if len(value) < 8:
                raise ConfigError(name, "(hidden)", "a secret of at least 8 characters")
        if self.client_id == self.admin_id:
            raise ConfigError("PARLEY_CRM_ADMIN_ID", self.admin_id,
                              "an id other than PARLEY_CRM_CLIENT_ID's")

    def database(self, data_dir: Path) -> str:
        """The SQLite database to open: PARLEY_CRM_DB, else a file in ``data_dir``."""
        return self.db_path or str(data_dir / "crm.sqlite3")
