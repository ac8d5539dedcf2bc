"""``parley crm``: run the reference CRM (uvicorn) until interrupted."""

from __future__ import annotations

import click
import uvicorn

from infra.crm.app import CrmService, create_app
from infra.crm.notify import kafka_publisher
from infra.crm.settings import CrmSettings
from kernel.logs import configure_logging
from kernel.settings import Settings

__all__ = ["crm"]


@click.command()
@click.option("--port", type=int, help="TCP port (default PARLEY_CRM_PORT, 8090).")
@click.option("--db", help="SQLite file (default PARLEY_CRM_DB, else <data dir>/crm.sqlite3).")
def crm(port: int | None, db: str | None) -> None:
    """Run the reference CRM and ticketing service (docs/integrations.md)."""
    settings = Settings.from_env()
    crm_settings = CrmSettings.from_env()
    configure_logging("crm", settings.log_level, settings.log_json)
    database = db or crm_settings.database(settings.data_dir)
    if database != ":memory:":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    service = CrmService(crm_settings, database, publish=kafka_publisher(settings))
    uvicorn.run(create_app(service), host=crm_settings.host,
                port=crm_settings.port if port is None else port,
                log_level=settings.log_level.lower(), access_log=False)
