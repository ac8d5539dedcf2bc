"""``parley gateway``: run one gateway process."""

from __future__ import annotations

import click

from gateway.server import Gateway
from kernel.logs import configure_logging
from kernel.runtime import collect_young_less_often, observe_gc_pauses, run_until_signalled
from kernel.settings import Settings

__all__ = ["gateway"]


@click.command()
@click.option("--host", help="Listen address (default: PARLEY_GATEWAY_HOST).")
@click.option("--port", type=int, help="Listen port (default: PARLEY_GATEWAY_PORT; 0: any).")
@click.option("--api-port", type=int,
              help="HTTP API port for webhooks (default: PARLEY_GATEWAY_API_PORT; 0: any).")
@click.option("--id", "gateway_id", help="Instance name (default: host name + pid).")
def gateway(host: str | None, port: int | None, api_port: int | None,
            gateway_id: str | None) -> None:
    """Run a WebSocket gateway: /ws, /healthz, /readyz, /metrics and the chat page at /;
    Slack and SMS webhooks on its API port (docs/channels.md)."""
    overrides: dict[str, object] = {
        "gateway_host": host, "gateway_port": port, "gateway_api_port": api_port,
        "gateway_id": gateway_id}
    settings = Settings.from_env(None, **{k: v for k, v in overrides.items() if v is not None})
    configure_logging("gateway", settings.log_level, settings.log_json)
    server = Gateway(settings)

    async def start() -> None:
        collect_young_less_often()
        observe_gc_pauses()
        await server.start()
        click.echo(f"gateway listening on {server.url} (ws: {server.url}ws, "
                   f"api: {server.api.url})", err=True)

    run_until_signalled(start, server.close)
