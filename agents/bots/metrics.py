"""Which bot version answered: a counter an operator compares a canary against stable by.

``parley_bot_turns_total{tenant, bot_version}`` counts the turns the dialogue step
recorded, by the version that decided them (its first 12 hex digits, as ``parley bot
list`` prints it; empty: the worker's own bot, PARLEY_BOT). With a canary at 10 %, about
a tenth of a tenant's new tasks count under the canary's version; its handoff and
conversation counters, and the ``bot_version`` field of the ``dialogue.turn.decided``
log, tell how it does beside the stable version. Versions per tenant are few (the
stable one, a canary, and those retired recently), so the label stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

__all__ = ["BOT_TURNS", "count_bot_turns"]

BOT_TURNS = Counter("parley_bot_turns_total",
                    "Dialogue turns recorded, by tenant and the bot version that decided them.",
                    ["tenant", "bot_version"])


def count_bot_turns(turns: Sequence[tuple[str, str]], applied: Sequence[bool]) -> None:
    """Count each recorded turn, given as (tenant id, bot version), under its version."""
    for (tenant, version), ok in zip(turns, applied, strict=True):
        if ok:
            BOT_TURNS.labels(tenant, version[:12]).inc()
