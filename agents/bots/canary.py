"""Canary releases: a tenant's new bot version served to a percentage of its users.

A tenant has at most two published versions at once, each a record on the compacted
``bots`` topic under its own key, so compaction keeps both and a worker reading the
topic from the beginning knows both:

* key ``<tenant>``: the **stable** version (``canary_percent`` 0), as before canaries;
* key ``<tenant>#canary``: the **canary** version, with ``canary_percent`` 1-99.
  ``#`` is not allowed in a tenant id (streams/keys.py), so no tenant's stable key is
  another's canary key.

A user whose rollout bucket (:func:`kernel.rollout.rollout_bucket`, the function the
gateway's feature flags use) is below the percentage starts new tasks on the canary;
every other user stays on the stable version. Raising the percentage keeps the users
already in. Promoting publishes the canary's record as the stable one and withdraws the
canary (a tombstone on its key); rolling back is that tombstone alone. A task in flight
finishes on the version it started on (agents/bots/registry.py).

Why a second key rather than a list of versions in one record: a version is up to
64 MiB, and each record stays one whole version (docs/bot-publishing.md, "One record");
withdrawing a canary is then a tombstone of a few bytes, and stable and canary change
independently. The percentage travels in the record (the ``canary_percent`` field) and
changing it republishes the canary's record: rare, and it keeps one source of truth.
"""

from __future__ import annotations

from agents.bots.errors import BotPublishError

__all__ = ["CANARY_KEY_SUFFIX", "check_percent", "record_key", "tenant_of_key"]

#: What a canary's key adds to its tenant id.
CANARY_KEY_SUFFIX = "#canary"


def record_key(tenant_id: str, *, canary: bool) -> bytes:
    """The ``bots`` record key of the tenant's stable or canary version."""
    return (tenant_id + (CANARY_KEY_SUFFIX if canary else "")).encode()


def tenant_of_key(key: bytes) -> tuple[str, bool]:
    """The tenant a ``bots`` record key names, and whether it is its canary's."""
    text = key.decode("utf-8", "replace")
    if text.endswith(CANARY_KEY_SUFFIX):
        return text[:-len(CANARY_KEY_SUFFIX)], True
    return text, False


def check_percent(percent: int) -> int:
    """``percent`` if it is a canary's (1-99); :class:`BotPublishError` saying what to
    do instead otherwise."""
    if percent == 100:
        raise BotPublishError("a canary at 100 % is the stable version: promote it "
                              "(`parley bot promote`) or publish without --canary")
    if not 1 <= percent <= 99:
        raise BotPublishError(f"a canary's percentage is 1-99, not {percent} "
                              "(0: withdraw it with `parley bot rollback`)")
    return percent
