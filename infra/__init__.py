"""Embedded development infrastructure: a Tansu broker and a Valkey Redis Cluster.

Everything runs on loopback and keeps data in memory only. ``parley infra``
drives it from the command line; :class:`EmbeddedInfra` from Python.
"""

from infra.embedded import EmbeddedInfra
from infra.topics import ensure_topics

__all__ = ["EmbeddedInfra", "ensure_topics"]
