"""``parley degrade``: force a tenant's degradation level, return it to automatic, or show
the levels (streams/degradation.py; docs/operations.md, "Degradation levels").

Only an operator can: the command talks to the Redis Cluster of PARLEY_REDIS_NODES with
the infrastructure's credentials (PARLEY_REDIS_USERNAME/_PASSWORD or the data dir's),
which no chat user or tenant holds; there is no HTTP endpoint for it. Every worker reads
the change within a second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from gateway.cli import with_cluster
from streams.degradation import DegradationStore, Level, Snapshot
from streams.keys import InvalidIdError, validate_id

__all__ = ["degrade", "describe"]

T = TypeVar("T")

_NAMES = {Level.FULL: "full service", Level.REDUCED: "reduced",
          Level.STATIC: "static fallback (cached answers only)",
          Level.MAINTENANCE: "maintenance (messages kept)"}


def _with_store(work: Callable[[DegradationStore], Awaitable[T]]) -> T:
    return with_cluster(lambda redis: work(DegradationStore(redis)))


def describe(snapshot: Snapshot, tenant_id: str | None = None) -> list[str]:
    """Lines saying the forced levels (or ``tenant_id``'s) and the open breakers."""
    lines = []
    tenants = [tenant_id] if tenant_id else sorted(snapshot.forced)
    for tenant in tenants:
        forced = snapshot.forced.get(tenant)
        if forced is None:
            lines.append(f"{tenant}: automatic")
        else:
            why = f" ({forced.reason})" if forced.reason else ""
            lines.append(f"{tenant}: level {int(forced.level)}, {_NAMES[forced.level]}, "
                         f"forced{why}")
    if not tenants:
        lines.append("no tenant's level is forced: every tenant's level is automatic")
    down = ", ".join(sorted(snapshot.open_backends)) or "none"
    lines.append(f"open breakers (level 2 for the tenants using them): {down}")
    return lines


@click.command()
@click.option("--tenant", "tenant_id", help="The tenant (without --level or --auto: show it).")
@click.option("--level", type=click.IntRange(1, 4),
              help="Force this level: 1 full, 2 reduced, 3 static (cached answers only), "
                   "4 maintenance (messages kept and answered later).")
@click.option("--auto", is_flag=True, help="Return the tenant to the automatic level.")
@click.option("--reason", default="", help="Why (shown by `parley degrade` and in logs).")
def degrade(tenant_id: str | None, level: int | None, auto: bool, reason: str) -> None:
    """Force a tenant's degradation level, return it to automatic, or show the levels."""
    if level is not None and auto:
        raise click.UsageError("give --level or --auto, not both")
    if (level is not None or auto) and not tenant_id:
        raise click.UsageError("--level and --auto need --tenant")
    if reason and level is None:
        raise click.UsageError("--reason goes with --level")
    if tenant_id:
        try:
            validate_id("tenant id", tenant_id)
        except InvalidIdError as exc:
            raise click.BadParameter(str(exc), param_hint="--tenant") from exc
    if level is not None and tenant_id:
        tenant, new = tenant_id, level
        _with_store(lambda store: store.force(tenant, new, reason))
        click.echo(f"{tenant}: level {new}, {_NAMES[Level(new)]}, forced "
                   f"(every worker within a second; `parley degrade --tenant {tenant} --auto` "
                   f"to return to automatic)")
        return
    if auto and tenant_id:
        tenant = tenant_id
        was = _with_store(lambda store: store.release(tenant))
        click.echo(f"{tenant}: automatic" + ("" if was else " (it was not forced)"))
        return
    snapshot = _with_store(lambda store: store.snapshot())
    for line in describe(snapshot, tenant_id):
        click.echo(line)
