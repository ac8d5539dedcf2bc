"""A worker's unpacked bot versions: kept on disk only while its registry holds them.

Each version a worker installs is unpacked into ``<root>/<version>/``
(:func:`agents.bots.bundle.unpack`): the bot's files and its trained NLU model,
megabytes each. :class:`ServedBotsDisk` removes a version's folder once the
:class:`~agents.bots.registry.BotRegistry` no longer holds it for any tenant (as
stable, one of the ``keep_previous`` before it, canary, or retired canary), and,
once the follower has caught up at start-up, every folder of an earlier run the
registry does not hold (:meth:`ServedBotsDisk.sweep`). A version two tenants share
is one folder, kept while either holds it.

Why removing a folder is safe once the version is loaded: the loader
(:func:`agents.bots.loading.load_served_bot` and the worker's integrations) reads
every file it needs while it loads (the flows, ``integrations.yml``, the ONNX
sessions, tokenizer, vocabularies and encoders are built in memory; a bot's
``knowledge_files`` only says whether it has documents, which the worker reads
from ``kb.documents``, not from the folder). Nothing reads a version's folder after
its load, so only the versions the registry dropped are removed, and a version
held again later is unpacked again first (the follower always unpacks before it
installs).

Several workers of one machine share ``<data dir>/served-bots`` (``parley run``
starts them with one data dir): a worker must not remove a folder another is
unpacking or loading. A lock file beside the root (``<root>.lock``, e.g.
``<data dir>/served-bots.lock``: the root holds version folders only; :func:`fcntl.flock`)
orders them: a batch of installs holds it shared, a removal holds it exclusive
and waits at most ``lock_wait_s`` for it; a removal that cannot get it is retried
after the next batch (or by the next start-up sweep), never waited on for long.
Another worker's versions removed this way are in its memory already.

Only names that are content addresses (64 lowercase hex digits) and the leftovers
of :func:`kernel.files.atomic_directory` and of a removal (``.<version>.building-*``,
``.<version>.old-*``, ``.<version>.removing-*``) are ever removed, and only as direct
entries of the root that are folders, not symbolic links: anything else found there
is logged and left alone. A removal that fails is logged and never raised.

Written here rather than with a library: it is a few ``os`` calls around
``shutil.rmtree``, and the rules (what may be removed, when) are Parley's own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Generic, TypeVar

from agents.bots.bundle import BotBundle, UnpackedBot, unpack
from agents.bots.errors import BundleError
from agents.bots.registry import BotRegistry

__all__ = ["ServedBotsDisk", "is_version", "lock_file_of", "version_folder"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


_VERSION = re.compile(r"[0-9a-f]{64}")
#: What kernel.files.atomic_directory and a removal leave beside a version's folder.
_LEFTOVER = re.compile(r"\.([0-9a-f]{64})\.(building|old|removing)-[0-9A-Za-z-]+")


def is_version(name: str) -> bool:
    """Whether ``name`` is a version's content address (SHA-256, lowercase hex)."""
    return _VERSION.fullmatch(name) is not None


def lock_file_of(root: Path) -> Path:
    """The file the workers sharing ``root`` lock (shared: installing; exclusive:
    removing): ``<root>.lock``, beside it."""
    root = Path(root)
    return root.with_name(f"{root.name}.lock")


def version_folder(root: Path, version: str) -> Path:
    """``root/<version>``; raises :class:`BundleError` for anything but a content
    address (a path, ``..``, an empty name): no other path is ever removed."""
    if not is_version(version):
        raise BundleError(f"{version!r} is not a bot version (64 lowercase hex digits): "
                          f"no folder of {root} is named so")
    return Path(root) / version


class ServedBotsDisk(Generic[T]):
    """The folder ``root`` where a worker unpacks versions, kept to what ``registry``
    holds. The follower unpacks with :meth:`unpack` inside :meth:`batch` (one per batch
    of records), and calls :meth:`sweep` once it has caught up."""

    def __init__(self, registry: BotRegistry[T], root: Path, *,
                 lock_wait_s: float = 2.0) -> None:
        self.registry = registry
        self.root = Path(root)
        self.lock_wait_s = lock_wait_s
        self._lock = threading.Lock()  # a batch and a sweep of this process, one at a time
        #: Versions whose removal is due (dropped, or could not be removed yet).
        self._due: set[str] = set()
        #: A sweep's leftovers removal, deferred while another worker held the lock.
        self._sweep_due = False
        self.removed_count = self.failed_count = 0

    # --- what is held -------------------------------------------------------------
    def held(self) -> set[str]:
        """Every version the registry holds for any tenant, retired canaries included."""
        return {loaded.version for loaded in self.registry.everything()}

    def on_disk(self) -> set[str]:
        """The versions unpacked under the root now."""
        if not self.root.is_dir():
            return set()
        return {entry.name for entry in self.root.iterdir()
                if is_version(entry.name) and entry.is_dir() and not entry.is_symlink()}

    # --- installing (the follower's thread) ----------------------------------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Around one batch of installs: the root is locked shared (no worker removes a
        folder while this one unpacks and loads it), and afterwards every version held
        before or unpacked during the batch that the registry no longer holds is removed."""
        with self._lock:
            before = self.held()
            try:
                with self._shared():
                    yield
            finally:
                self._due |= before - self.held()
                self._remove_due()

    def unpack(self, bundle: BotBundle) -> UnpackedBot:
        """:func:`~agents.bots.bundle.unpack` ``bundle`` under the root (call it inside
        :meth:`batch`); its folder is removed after the batch unless the registry then
        holds its version (a version the loader refused goes too)."""
        version_folder(self.root, bundle.version)  # refuses a name that is not a version
        self._due.add(bundle.version)
        return unpack(bundle, self.root)

    def sweep(self) -> list[str]:
        """Remove every version folder the registry does not hold (a start-up's: the
        folders of an earlier run) and every leftover of an interrupted unpack or
        removal; returns the versions removed. Waits up to ``lock_wait_s`` for other
        workers' installs to end; if they do not, the sweep is done after the next batch."""
        with self._lock:
            try:
                self._due |= self.on_disk()
            except OSError as exc:  # an unreadable root: logged, start-up goes on
                self.failed_count += 1
                logger.error("bots.prune.failed root=%s error=%s", self.root, exc)
                return []
            if not self.root.is_dir():
                return []
            return self._remove_due(leftovers=True)

    # --- removing -----------------------------------------------------------------
    def _remove_due(self, *, leftovers: bool = False) -> list[str]:
        """Remove the due versions the registry does not hold (under the exclusive lock);
        they stay due when the lock is busy. Never raises: a failure is logged."""
        try:
            return self._remove_due_or_raise(leftovers or self._sweep_due)
        except OSError as exc:
            self.failed_count += 1
            logger.error("bots.prune.failed root=%s error=%s", self.root, exc)
            return []

    def _remove_due_or_raise(self, leftovers: bool) -> list[str]:
        held = self.held()
        self._due -= held
        if not self._due and not leftovers:
            return []
        with self._exclusive() as locked:
            if not locked:
                self._sweep_due = leftovers
                logger.info("bots.prune.deferred versions=%d reason=another worker is "
                            "installing", len(self._due))
                return []
            removed = [version for version in sorted(self._due)
                       if self._remove(version_folder(self.root, version))]
            self._due.clear()  # removed, or failed and logged: the next sweep retries
            if leftovers:
                self._sweep_due = False
                self._remove_leftovers()
        if removed:
            logger.info("bots.prune.removed versions=%s held=%d",
                        ",".join(v[:12] for v in removed), len(held))
        return removed

    def _remove_leftovers(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if is_version(entry.name):
                continue
            if _LEFTOVER.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                self._rmtree(entry)
            else:
                logger.warning("bots.prune.skipped path=%s reason=not a bot version", entry)

    def _remove(self, folder: Path) -> bool:
        """Rename ``folder`` aside, then delete it: a folder under a version's name is
        always whole (a removal that fails half-way must not leave a folder
        :func:`~agents.bots.bundle.unpack` would take as whole). True when it was removed."""
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            logger.warning("bots.prune.skipped path=%s reason=not a folder", folder)
            return False
        aside = folder.with_name(f".{folder.name}.removing-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            folder.rename(aside)
        except FileNotFoundError:
            return False  # not unpacked here, or another worker removed it
        except OSError as exc:
            self.failed_count += 1
            logger.error("bots.prune.failed path=%s error=%s", folder, exc)
            return False
        self.removed_count += 1
        self._rmtree(aside)
        return True

    def _rmtree(self, folder: Path) -> None:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except OSError as exc:  # left aside, under a name the next sweep removes
            self.failed_count += 1
            logger.error("bots.prune.failed path=%s error=%s", folder, exc)

    # --- the lock between workers sharing the root ---------------------------------
    def _lock_file(self) -> IO[bytes] | None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return open(lock_file_of(self.root), "ab")  # closed by the caller
        except OSError as exc:
            logger.error("bots.prune.lock_failed root=%s error=%s", self.root, exc)
            return None

    @contextmanager
    def _shared(self) -> Iterator[None]:
        """The lock shared; without it (no lock file: the disk is failing) installs go
        on unlocked, as unpacking fails then anyway."""
        handle = self._lock_file()
        try:
            if handle is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH)
                except OSError as exc:  # a file system without locks: go on unlocked
                    logger.error("bots.prune.lock_failed root=%s error=%s", self.root, exc)
            yield
        finally:
            if handle is not None:
                handle.close()  # releases the lock

    @contextmanager
    def _exclusive(self) -> Iterator[bool]:
        """The lock exclusive, waiting up to ``lock_wait_s``: True when taken."""
        handle = self._lock_file()
        try:
            yield handle is not None and _take_exclusive(handle, self.lock_wait_s)
        finally:
            if handle is not None:
                handle.close()


def _take_exclusive(handle: IO[bytes], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:  # EWOULDBLOCK: another worker holds it
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
