"""Embedded infrastructure: Apache Kafka in KRaft mode and a Valkey Redis Cluster.

Everything runs on loopback and keeps its data on disk under ``.parley/``.
``parley infra`` drives it from the command line; :class:`EmbeddedInfra` from Python.
"""

from infra.embedded import EmbeddedInfra
from infra.topics import ensure_topics

__all__ = ["EmbeddedInfra", "ensure_topics"]
