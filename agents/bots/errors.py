"""Errors of bot publishing (see the whole tree in :mod:`kernel.errors`).

::

    ParleyError                      (kernel/errors.py)
    └── BotPublishError              a bot version that cannot be packed, published or unpacked
        └── BundleError              a published version that is not whole or not safe to unpack

A worker never raises these out of its follower: a bad version is logged,
counted and skipped, and the tenant keeps the version it had.
"""

from __future__ import annotations

from kernel.errors import ParleyError

__all__ = ["BotPublishError", "BundleError"]


class BotPublishError(ParleyError):
    """A bot version that cannot be packed, published or unpacked."""


class BundleError(BotPublishError):
    """A published version that is not whole or not safe to unpack: the message names the
    tenant, the version and the first problem found."""
