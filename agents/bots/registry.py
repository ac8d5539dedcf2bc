"""Which bot each tenant is served by, in one worker, swapped atomically.

:class:`BotRegistry` holds, per tenant, the stable :class:`LoadedBot` and the
``keep_previous`` versions before it, and at most one **canary** version with the
percentage of the tenant's users it serves (:class:`Canary`, agents/bots/canary.py).
:meth:`BotRegistry.install` (called by the ``bots`` follower, on its thread) loads a
version with the loader the worker gives (the bot's flows and its NLU model: the
registry knows nothing of either) *before* anything changes, then swaps the tenant's
entry in one assignment: a reader sees the old version or the new one, never a mix,
and a version that fails to load never replaces a working one. A version two tenants
(or a tenant's stable and canary) share is loaded once.

Conversations in flight (the rule, also in docs/bot-publishing.md): a
conversation's dialogue state records the version it runs on. Each turn runs
wholly on one version, chosen by :meth:`BotRegistry.for_conversation`:

* inside a flow (a form half-filled, an action awaited), the turn runs on the
  recorded version while this worker still holds it: a task started on one
  version finishes on it, with the prompts, slots and steps it started with —
  a canary arriving, being promoted or rolled back included (a withdrawn canary
  is kept, as :meth:`BotRegistry.retired`, for the tasks begun on it);
* between tasks (no active flow), or for a new conversation, the turn runs on
  the version the user is routed to: the canary when the tenant has one and the
  user's rollout bucket (:func:`kernel.rollout.rollout_bucket`) is below its
  percentage, the stable version otherwise; the state records it from then on;
* a recorded version this worker no longer holds (published over more than
  ``keep_previous`` times since, or never seen: a restarted worker reads only
  the newest versions from the compacted topic) falls back to the user's one.
  The dialogue step must then check that the conversation's flow and step still
  exist in it, and otherwise start the flow again from its first step — the
  conversation goes on, it is not lost.

A turn's message is understood by its own version's NLU model: the NLU step uses
:meth:`BotRegistry.for_user`'s (it runs before the state is read), and the dialogue
step understands the message again with the turn's version's model when that is
another one (agents/dialogue/turns.py, ``understood_on``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from agents.bots.bundle import UnpackedBot
from kernel.rollout import in_rollout

__all__ = ["BotLoader", "BotRegistry", "Canary", "LoadedBot"]

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


@dataclass(frozen=True)
class Canary(Generic[T]):
    """A tenant's canary: ``bot`` serves new tasks of the users whose rollout bucket is
    below ``percent`` (1-99)."""

    bot: LoadedBot[T]
    percent: int

    def serves(self, user_id: str) -> bool:
        return in_rollout(self.bot.tenant_id, user_id, self.percent)


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
        #: tenant → its canary; tenant → its last withdrawn canary. Replaced whole too.
        self._canary: dict[str, Canary[T]] = {}
        self._retired: dict[str, LoadedBot[T]] = {}
        self._listeners: list[Callable[[str, LoadedBot[T] | None], None]] = []

    # --- reading (any thread) -------------------------------------------------------
    def get(self, tenant_id: str, version: str | None = None) -> LoadedBot[T] | None:
        """``version`` of the tenant's bot if held (stable, previous, canary or retired
        canary), else its stable one; None when the tenant has no stable version."""
        held = self._held.get(tenant_id, ())
        if version:
            for loaded in self._everything_of(tenant_id):
                if loaded.version == version:
                    return loaded
        return held[0] if held else None

    def _everything_of(self, tenant_id: str) -> tuple[LoadedBot[T], ...]:
        canary, retired = self._canary.get(tenant_id), self._retired.get(tenant_id)
        return (*self._held.get(tenant_id, ()), *((canary.bot,) if canary else ()),
                *((retired,) if retired else ()))

    def for_user(self, tenant_id: str, user_id: str) -> LoadedBot[T] | None:
        """The version the user's new tasks run on: the tenant's canary when the user's
        bucket is below its percentage, else its stable version (None: neither)."""
        canary = self._canary.get(tenant_id)
        if canary is not None and canary.serves(user_id):
            return canary.bot
        return self.get(tenant_id)

    def for_conversation(self, tenant_id: str, recorded_version: str, in_flow: bool, *,
                         user_id: str) -> LoadedBot[T] | None:
        """The version a conversation's next turn runs on (the rule in the module's
        docstring): the recorded one while inside a flow and held, else the user's."""
        if in_flow and recorded_version:
            loaded = self.get(tenant_id, recorded_version)
            if loaded is not None and loaded.version == recorded_version:
                return loaded
        return self.for_user(tenant_id, user_id)

    def serving(self, tenant_id: str) -> tuple[LoadedBot[T], ...]:
        """The versions the tenant's new tasks run on: its stable one and its canary."""
        canary, held = self._canary.get(tenant_id), self._held.get(tenant_id, ())
        return (*held[:1], *((canary.bot,) if canary else ()))

    def everything(self) -> list[LoadedBot[T]]:
        """Every version held for any tenant (stable, previous, canary, retired canary: a
        tenant whose only canary was withdrawn still holds it for the tasks begun on it)."""
        tenants = sorted({*self._held, *self._canary, *self._retired})
        return [loaded for tenant in tenants for loaded in self._everything_of(tenant)]

    def canary(self, tenant_id: str) -> Canary[T] | None:
        """The tenant's canary, if it has one."""
        return self._canary.get(tenant_id)

    def retired(self, tenant_id: str) -> LoadedBot[T] | None:
        """The tenant's last withdrawn canary, kept for the tasks begun on it."""
        return self._retired.get(tenant_id)

    def versions(self, tenant_id: str) -> list[str]:
        """The versions held for the tenant, current first."""
        return [loaded.version for loaded in self._held.get(tenant_id, ())]

    def tenants(self) -> list[str]:
        """The tenants with a stable or a canary version."""
        return sorted({*self._held, *self._canary})

    def on_change(self, listener: Callable[[str, LoadedBot[T] | None], None]) -> None:
        """Call ``listener(tenant, new current or None)`` after each swap, on the
        writer's thread (e.g. to log, or to pass it to the event loop)."""
        self._listeners.append(listener)

    # --- writing (the follower's thread) --------------------------------------------
    def install(self, tenant_id: str, unpacked: UnpackedBot, *,
                published_at_ms: int = 0) -> LoadedBot[T]:
        """Make ``unpacked`` the tenant's stable version, loading it first unless any
        tenant already holds it. An exception from the loader propagates and nothing
        changes. A canary of the same version (a promotion) is no longer a canary."""
        held = self._held.get(tenant_id, ())
        if held and held[0].version == unpacked.version:
            return held[0]  # published again: nothing to do
        loaded = self._load(tenant_id, unpacked, published_at_ms)
        with self._lock:
            before = self._held.get(tenant_id, ())
            kept = tuple(b for b in before if b.version != loaded.version)
            self._held = {**self._held,
                          tenant_id: (loaded, *kept[:self.keep_previous])}
            canary = self._canary.get(tenant_id)
            if canary is not None and canary.bot.version == loaded.version:
                self._canary = _without(self._canary, tenant_id)
        logger.info("bots.swapped tenant=%s version=%s name=%s previous=%s", tenant_id,
                    loaded.version[:12], loaded.name,
                    before[0].version[:12] if before else None)
        self._notify(tenant_id, loaded)
        return loaded

    def install_canary(self, tenant_id: str, unpacked: UnpackedBot, percent: int, *,
                       published_at_ms: int = 0) -> Canary[T]:
        """Make ``unpacked`` the tenant's canary for ``percent`` (1-99) % of its users,
        loading it first (as :meth:`install`); the same version again only changes the
        percentage. The canary it replaces is retired (kept for its tasks in flight)."""
        if not 1 <= percent <= 99:
            raise ValueError(f"a canary's percent is 1-99, not {percent}")
        before = self._canary.get(tenant_id)
        if before is not None and before.bot.version == unpacked.version:
            loaded = before.bot
        else:
            loaded = self._load(tenant_id, unpacked, published_at_ms)
        canary = Canary(loaded, percent)
        with self._lock:
            self._canary = {**self._canary, tenant_id: canary}
            if before is not None and before.bot.version != loaded.version:
                self._retired = {**self._retired, tenant_id: before.bot}
        logger.info("bots.canary tenant=%s version=%s name=%s percent=%d stable=%s",
                    tenant_id, loaded.version[:12], loaded.name, percent,
                    _short(self.get(tenant_id)))
        self._notify(tenant_id, self.get(tenant_id))
        return canary

    def withdraw_canary(self, tenant_id: str) -> bool:
        """Roll back: the tenant's users start new tasks on its stable version again. The
        canary is kept as :meth:`retired` for the tasks begun on it. True when it had one."""
        with self._lock:
            canary = self._canary.get(tenant_id)
            if canary is None:
                return False
            self._canary = _without(self._canary, tenant_id)
            stable = self._held.get(tenant_id, ())
            if not stable or stable[0].version != canary.bot.version:  # not promoted
                self._retired = {**self._retired, tenant_id: canary.bot}
        logger.info("bots.canary_withdrawn tenant=%s version=%s stable=%s", tenant_id,
                    canary.bot.version[:12], _short(self.get(tenant_id)))
        self._notify(tenant_id, self.get(tenant_id))
        return True

    def remove(self, tenant_id: str) -> bool:
        """Unpublish: the tenant has no bot any more, canary included. True when it had
        one."""
        with self._lock:
            if not any(tenant_id in held for held in (self._held, self._canary, self._retired)):
                return False
            self._held = _without(self._held, tenant_id)
            self._canary = _without(self._canary, tenant_id)
            self._retired = _without(self._retired, tenant_id)
        logger.info("bots.removed tenant=%s", tenant_id)
        self._notify(tenant_id, None)
        return True

    def _load(self, tenant_id: str, unpacked: UnpackedBot,
              published_at_ms: int) -> LoadedBot[T]:
        content = self._loaded_content(unpacked.version)
        if content is None:
            content = (self._loader(unpacked),)
        return LoadedBot(tenant_id, unpacked.version, unpacked.name, published_at_ms,
                         unpacked, content[0])

    def _loaded_content(self, version: str) -> tuple[T] | None:
        for tenant_id in {*self._held, *self._canary, *self._retired}:
            for loaded in self._everything_of(tenant_id):
                if loaded.version == version:
                    return (loaded.content,)
        return None

    def _notify(self, tenant_id: str, current: LoadedBot[T] | None) -> None:
        for listener in self._listeners:
            try:
                listener(tenant_id, current)
            except Exception:
                logger.exception("bots.listener_failed tenant=%s", tenant_id)


V = TypeVar("V")


def _without(entries: dict[str, V], tenant_id: str) -> dict[str, V]:
    """A copy of ``entries`` without the tenant's (readers keep the dict they took)."""
    return {t: v for t, v in entries.items() if t != tenant_id}


def _short(loaded: LoadedBot[T] | None) -> str | None:
    return loaded.version[:12] if loaded is not None else None
