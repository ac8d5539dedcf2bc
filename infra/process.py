"""Child server processes: start with a log file, check, stop (SIGTERM, grace, SIGKILL)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from kernel.errors import InfraError

__all__ = ["DEFAULT_GRACE", "ServiceProcess", "log_tail", "stop_processes", "wait_for_stop"]

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL. A Kafka node's controlled shutdown (moving
#: leadership away, closing its logs) takes a few seconds, so this stays above that.
DEFAULT_GRACE = 10.0


def log_tail(path: Path, lines: int = 20, max_bytes: int = 8192) -> str:
    """The last ``lines`` lines of a log file ("" if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class ServiceProcess:
    """One server process started by us, its output going to ``log_path``.

    Processes run in their own session (``start_new_session=True``), so a
    terminal's Ctrl-C reaches only the parent, which then stops them in order,
    and ``parley infra up`` can leave them running after it exits. ``env`` is added
    to this process's environment for the child.
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, port: int,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env or {})
        self.log_path = log_path
        self.port = port
        self._popen: subprocess.Popen[bytes] | None = None
        self._process: psutil.Process | None = None
        self._exit_code: int | None = None  # set when psutil reaped the process

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def process(self) -> psutil.Process | None:
        return self._process

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.debug("starting %s: %s", self.name, " ".join(self.argv))
        with self.log_path.open("wb") as log:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env={**os.environ, **self.env} if self.env else None,
                )
            except OSError as exc:
                raise InfraError(f"cannot run {self.argv[0]} for {self.name}: {exc}") from exc
        try:
            self._process = psutil.Process(self._popen.pid)
        except psutil.NoSuchProcess:  # died at once; check_running() reports it with the log
            self._process = None

    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        if self._exit_code is not None:
            return self._exit_code
        return self._popen.poll() if self._popen is not None else None

    def check_running(self) -> None:
        """Raise :class:`InfraError` with the end of the log if the process has exited."""
        code = self.returncode()
        if self._popen is None or code is None:
            return
        tail = log_tail(self.log_path)
        raise InfraError(
            f"{self.name} exited with code {code} during start-up; "
            f"last lines of {self.log_path}:\n{tail or '(empty log)'}"
        )

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        stop_processes([self], grace)

    def reap(self, exit_code: int | None = None) -> None:
        """Collect the exit status (``exit_code`` when psutil already reaped the process)."""
        if exit_code is not None and self._exit_code is None:
            self._exit_code = int(exit_code)
        if self._popen is not None and self._exit_code is None:
            self._popen.poll()


def _exit_status(proc: psutil.Process) -> tuple[bool, int | None]:
    """(exited, exit code). Reaps our own children; a zombie of another parent counts as exited."""
    try:
        return True, proc.wait(timeout=0)
    except psutil.TimeoutExpired:
        pass
    try:
        return proc.status() == psutil.STATUS_ZOMBIE, None
    except psutil.NoSuchProcess:
        return True, None


def _wait_exit(
    procs: Sequence[psutil.Process], timeout: float, codes: dict[int, int | None]
) -> list[psutil.Process]:
    """Poll every 20 ms until all have exited or ``timeout`` passes; returns those alive.

    (``psutil.wait_procs`` takes up to a second per round for processes that are
    not our children, which ``parley infra down`` stops.)
    """
    end = time.monotonic() + timeout
    alive = list(procs)
    while True:
        still = []
        for proc in alive:
            exited, code = _exit_status(proc)
            if exited:
                codes[proc.pid] = code
            else:
                still.append(proc)
        alive = still
        if not alive or time.monotonic() >= end:
            return alive
        time.sleep(0.02)


def stop_processes(
    services: Sequence[ServiceProcess | psutil.Process], grace: float = DEFAULT_GRACE
) -> None:
    """SIGTERM every process at once, wait up to ``grace`` seconds, SIGKILL the rest.

    Safe to call again and on processes that already exited; psutil refuses to
    signal a pid that was reused by another process.
    """
    procs: list[psutil.Process] = []
    for item in services:
        proc = item.process if isinstance(item, ServiceProcess) else item
        if proc is None:
            continue
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
        procs.append(proc)
    codes: dict[int, int | None] = {}
    alive = _wait_exit(procs, grace, codes)
    for proc in alive:
        logger.warning(
            "infra.process.kill pid=%s grace_s=%.1f (no exit after SIGTERM)", proc.pid, grace
        )
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    for proc in _wait_exit(alive, 5.0, codes):
        logger.error("infra.process.survived_kill pid=%s", proc.pid)
    for item in services:
        if isinstance(item, ServiceProcess):
            # psutil reaped our own children: keep their exit codes for returncode().
            item.reap(codes.get(item.pid or -1))


def wait_for_stop(died: Callable[[], str | None], poll_s: float = 0.5) -> str | None:
    """Block until SIGINT or SIGTERM (then return None), or until ``died()`` describes a
    child process that died (then return that description).

    For a command that keeps its children running in the foreground; the previous
    signal handlers are restored on return.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("infra.stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            dead = died()
            if dead:
                return dead
        return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
