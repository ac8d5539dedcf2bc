"""Percentage rollouts by user: one bucket function for every process that decides.

A gateway turns a tenant's feature flag on for some of its users, and a worker serves
a canary bot version to some of them (docs/bot-publishing.md, "Canary releases"). Both
must put a user in the same bucket, or a user would see a flag on in the gateway and
the canary off in the worker, so the function lives here, below both.

A user's bucket (0-99) is a stable hash of tenant and user: the same on every process,
every restart and every day, and independent between tenants. A rollout at ``p`` %
takes buckets ``0 .. p-1``, so a user who is in at 10 % stays in as it grows to 50 %.
SHA-256 (not Python's ``hash``, salted per process) makes it stable across processes;
its first 8 bytes modulo 100 are uniform to well under 0.01 %.
"""

from __future__ import annotations

import hashlib

__all__ = ["in_rollout", "rollout_bucket"]


def rollout_bucket(tenant_id: str, user_id: str) -> int:
    """The user's rollout bucket, 0-99: the same on every gateway and worker, every day."""
    digest = hashlib.sha256(f"{tenant_id}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_rollout(tenant_id: str, user_id: str, percent: int) -> bool:
    """Whether the user is among the first ``percent`` % of the tenant's users: their
    bucket is below it (0: nobody, 100: everybody)."""
    return rollout_bucket(tenant_id, user_id) < percent
