"""Folders that appear whole: built aside, then renamed into place."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; move it to ``target`` when the block succeeds.

    A reader of ``target`` never sees a half-written folder, and a failed block
    leaves nothing behind. When ``target`` already exists:

    * ``replace=True``: it is replaced. The old folder is renamed aside first, so
      ``target`` is missing only between two renames, never while a tree is deleted;
    * ``replace=False``: it is kept and the new folder dropped. For caches whose
      content is decided by their name, where a concurrent builder that finished
      first made the same thing.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    building = target.with_name(f".{target.name}.building-{suffix}")
    building.mkdir()
    try:
        yield building
        if target.exists():
            if not replace:
                return
            old = target.with_name(f".{target.name}.old-{suffix}")
            target.rename(old)
            building.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                building.rename(target)
            except OSError:
                if replace or not target.exists():
                    raise  # not a concurrent builder that won: a real failure
    finally:
        shutil.rmtree(building, ignore_errors=True)  # gone already when renamed
