"""Which bot each tenant is served by, in one worker, swapped atomically.

:class:`BotRegistry` holds, per tenant, the current :class:`LoadedBot` and the
``keep_previous`` versions before it. :meth:`BotRegistry.install` (called by the
``bots`` follower, on its thread) loads a version with the loader the worker
gives (the bot's flows and its NLU model: the registry knows nothing of either)
*before* anything changes, then swaps the tenant's entry in one assignment:
a reader sees the old version or the new one, never a mix, and a version that
fails to load never replaces a working one. A version two tenants share is
loaded once.

Conversations in flight (the rule, also in docs/bot-publishing.md): a
conversation's dialogue state records the version it runs on. Each turn runs
wholly on one version, chosen by :meth:`BotRegistry.for_conversation`:

* inside a flow (a form half-filled, an action awaited), the turn runs on the
  recorded version while this worker still holds it: a task started on one
  version finishes on it, with the prompts, slots and steps it started with;
* between tasks (no active flow), or for a new conversation, the turn runs on
  the tenant's current version, and the state records it from then on;
* a recorded version this worker no longer holds (published over more than
  ``keep_previous`` times since, or never seen: a restarted worker reads only
  the newest version from the compacted topic) falls back to the current one.
  The dialogue step must then check that the conversation's flow and step still
  exist in it, and otherwise start the flow again from its first step — the
  conversation goes on, it is not lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from agents.bots.bundle import UnpackedBot

__all__ = ["BotLoader", "BotRegistry", "LoadedBot"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Makes what a worker serves (e.g. the bot's flows and its NLU model) of an unpacked
#: version; runs on the follower's thread and may take seconds.
BotLoader = Callable[[UnpackedBot], T]


@dataclass(frozen=True)
class LoadedBot(Generic[T]):
    """One version of one tenant's bot, ready to serve. ``content`` is what the loader
    made, shared by every tenant on this version."""

    tenant_id: str
    version: str
    name: str
    published_at_ms: int
    unpacked: UnpackedBot
    content: T


class BotRegistry(Generic[T]):
    """Tenant → the bot version it is served by (and the ones before it)."""

    def __init__(self, loader: BotLoader[T], *, keep_previous: int = 1) -> None:
        if keep_previous < 0:
            raise ValueError("keep_previous must be >= 0")
        self._loader = loader
        self.keep_previous = keep_previous
        self._lock = threading.Lock()  # writers only; readers take the dict as it is
        #: tenant → (current, previous, ...): replaced whole, never changed in place.
        self._held: dict[str, tuple[LoadedBot[T], ...]] = {}
        self._listeners: list[Callable[[str, LoadedBot[T] | None], None]] = []

    # --- reading (any thread) -------------------------------------------------------
    def get(self, tenant_id: str, version: str | None = None) -> LoadedBot[T] | None:
        """``version`` of the tenant's bot if held, else its current one; None when the
        tenant has no published bot."""
        held = self._held.get(tenant_id)
        if not held:
            return None
        if version:
            for loaded in held:
                if loaded.version == version:
                    return loaded
        return held[0]

    def for_conversation(self, tenant_id: str, recorded_version: str,
                         in_flow: bool) -> LoadedBot[T] | None:
        """The version a conversation's next turn runs on (the rule in the module's
        docstring): the recorded one while inside a flow and held, else the current."""
        return self.get(tenant_id, recorded_version if in_flow else None)

    def versions(self, tenant_id: str) -> list[str]:
        """The versions held for the tenant, current first."""
        return [loaded.version for loaded in self._held.get(tenant_id, ())]

    def tenants(self) -> list[str]:
        return sorted(self._held)

    def on_change(self, listener: Callable[[str, LoadedBot[T] | None], None]) -> None:
        """Call ``listener(tenant, new current or None)`` after each swap, on the
        writer's thread (e.g. to log, or to pass it to the event loop)."""
        self._listeners.append(listener)

    # --- writing (the follower's thread) --------------------------------------------
    def install(self, tenant_id: str, unpacked: UnpackedBot, *,
                published_at_ms: int = 0) -> LoadedBot[T]:
        """Make ``unpacked`` the tenant's current version, loading it first unless any
        tenant already holds it. An exception from the loader propagates and nothing
        changes."""
        held = self._held.get(tenant_id, ())
        if held and held[0].version == unpacked.version:
            return held[0]  # published again: nothing to do
        content = self._loaded_content(unpacked.version)
        if content is None:
            content = (self._loader(unpacked),)
        loaded = LoadedBot(tenant_id, unpacked.version, unpacked.name, published_at_ms,
                           unpacked, content[0])
        with self._lock:
            before = self._held.get(tenant_id, ())
            kept = tuple(b for b in before if b.version != loaded.version)
            self._held = {**self._held,
                          tenant_id: (loaded, *kept[:self.keep_previous])}
        logger.info("bots.swapped tenant=%s version=%s name=%s previous=%s", tenant_id,
                    loaded.version[:12], loaded.name,
                    before[0].version[:12] if before else None)
        self._notify(tenant_id, loaded)
        return loaded

    def remove(self, tenant_id: str) -> bool:
        """Unpublish: the tenant has no bot any more. True when it had one."""
        with self._lock:
            if tenant_id not in self._held:
                return False
            self._held = {t: held for t, held in self._held.items() if t != tenant_id}
        logger.info("bots.removed tenant=%s", tenant_id)
        self._notify(tenant_id, None)
        return True

    def _loaded_content(self, version: str) -> tuple[T] | None:
        for held in self._held.values():
            for loaded in held:
                if loaded.version == version:
                    return (loaded.content,)
        return None

    def _notify(self, tenant_id: str, current: LoadedBot[T] | None) -> None:
        for listener in self._listeners:
            try:
                listener(tenant_id, current)
            except Exception:
                logger.exception("bots.listener_failed tenant=%s", tenant_id)
