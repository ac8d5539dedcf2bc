"""Parley's own exceptions.

::

    ParleyError
    ├── ConfigError            a setting is missing or malformed (start-up)
    ├── InfraError             embedded infrastructure cannot start or is unhealthy
    │   ├── PortInUseError     a port Parley needs is taken
    │   └── BinaryNotFoundError  a broker / redis-server binary is missing
    ├── SchemaError            an Avro schema is invalid or incompatible
    ├── MissingExtra           a command needs an optional package (kernel/extras.py)
    └── DecodeError            bytes on a topic are not a known Avro event

Exceptions carry structured fields and read well with ``str()``. Third-party
errors are translated at the boundary and chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BinaryNotFoundError",
    "ConfigError",
    "DecodeError",
    "InfraError",
    "ParleyError",
    "PortInUseError",
    "SchemaError",
]


class ParleyError(Exception):
    """Base class of every error Parley raises on purpose."""


class ConfigError(ParleyError):
    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(name, value, expected)
        self.name, self.value, self.expected = name, value, expected

    def __str__(self) -> str:
        return f"setting {self.name}={self.value!r} is invalid: expected {self.expected}"


class InfraError(ParleyError):
    """Embedded infrastructure could not start, stop or answer."""


class PortInUseError(InfraError):
    def __init__(self, service: str, port: int) -> None:
        super().__init__(service, port)
        self.service, self.port = service, port

    def __str__(self) -> str:
        return (
            f"port {self.port} needed by {self.service} is already in use; stop what holds it "
            f"(`ss -ltnp 'sport = :{self.port}'` finds it; embedded infrastructure left "
            f"running stops with `parley infra down`)"
        )


class BinaryNotFoundError(InfraError):
    def __init__(self, binary: str, tried: str) -> None:
        super().__init__(binary, tried)
        self.binary, self.tried = binary, tried

    def __str__(self) -> str:
        return f"cannot find the {self.binary} binary; tried {self.tried}"


class SchemaError(ParleyError):
    """An Avro schema is invalid, unknown or incompatible."""


class DecodeError(ParleyError):
    """Bytes that are not a decodable Parley event (goes to the topic's dead-letter queue)."""

    def __init__(self, reason: str, *, size: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.size = reason, size

    def __str__(self) -> str:
        return f"undecodable event ({self.size} bytes): {self.reason}"
