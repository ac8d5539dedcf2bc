"""Loopback port helpers: probe by binding, wait for a listener, pick free ports."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from kernel.errors import PortInUseError

__all__ = ["check_ports_free", "find_free_ports", "is_port_free", "port_accepts"]


def is_port_free(host: str, port: int) -> bool:
    """True if a server could bind ``host:port`` now.

    ``SO_REUSEADDR`` is set like the servers we start set it, so a port held only
    by connections in TIME_WAIT counts as free; on Linux a live listener (on this
    address or on the wildcard address) still makes the bind fail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(host: str, wanted: Iterable[tuple[str, int]]) -> None:
    """Raise :class:`PortInUseError` for the first ``(service, port)`` that is taken."""
    for service, port in wanted:
        if not is_port_free(host, port):
            raise PortInUseError(service, port)


def port_accepts(host: str, port: int, timeout: float = 0.25) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the OS reports free right now.

    The ports are released before returning, so another process may take one
    before we bind it again; callers start their servers right away and treat a
    :class:`PortInUseError` as a reason to pick again.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
