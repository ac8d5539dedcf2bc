"""``parley up`` keeps its gateway and workers running: a crashed one is restarted.

The rule (docs/operations.md, "Restarts"): a gateway or worker that exits while
``parley up`` runs is started again, with the same command and port, after a
pause that doubles with each crash of that process in the last
``window_s`` seconds, from ``first_delay_s`` up to ``max_delay_s`` (1, 2, 4,
8 ... 30 s by default). The broker and Redis Cluster stay up meanwhile; a
worker's partitions go to the others in its group, or wait for it. Only a
process that crashes ``max_crashes`` times within ``window_s`` (5 in 2 minutes
by default: a crash loop, which restarting will not fix) makes ``parley up``
give up: it stops everything and exits non-zero, naming the process and its
log. A process that ran for a while before it crashed starts again from the
first pause: the window forgets crashes older than ``window_s``.

This is systemd's ``Restart=on-failure`` with ``StartLimitBurst`` /
``StartLimitIntervalSec``, and Erlang supervisors' restart intensity. No
library is used for it: tenacity (or backoff, stamina) retries a *call* until it
succeeds and stops after N attempts or a total time since the first; here the
process did start, the question is how often it dies, and the give-up rule is a
sliding window they do not offer. What would remain of them is one line,
``min(first * 2**n, cap)``.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.stack import ChildProcess, Stack

__all__ = ["CrashHistory", "RestartPolicy", "Supervisor", "describe_exit"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a crashed process, and when to give up (see the module's rule)."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_crashes: int = 5
    window_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError(f"restart delays must satisfy 0 < first ({self.first_delay_s}) "
                             f"<= max ({self.max_delay_s})")
        if self.max_crashes < 1 or self.window_s <= 0:
            raise ValueError(f"give up after at least 1 crash in a window over 0 s, not "
                             f"{self.max_crashes} in {self.window_s} s")

    def delay_s(self, recent_crashes: int) -> float:
        """The pause before restarting a process that crashed ``recent_crashes`` times
        (this one included) within the window."""
        return min(self.first_delay_s * 2 ** (recent_crashes - 1), self.max_delay_s)


@dataclass
class CrashHistory:
    """The crashes of one process, and what the policy says about the next one."""

    policy: RestartPolicy
    restarts: int = 0
    _crashes: deque[float] = field(default_factory=deque)

    def crashed(self, now: float) -> float | None:
        """Record a crash at ``now`` (monotonic seconds); return the pause before the
        restart, or None when the process crashed too often: give up."""
        crashes = self._crashes
        while crashes and crashes[0] <= now - self.policy.window_s:
            crashes.popleft()
        crashes.append(now)
        if len(crashes) >= self.policy.max_crashes:
            return None
        self.restarts += 1
        return self.policy.delay_s(len(crashes))

    @property
    def recent(self) -> int:
        return len(self._crashes)


def describe_exit(code: int | None) -> str:
    """``exited with code 1``, ``was killed by SIGKILL`` (a Popen's returncode)."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


class Supervisor:
    """Watches a stack's gateways and workers; restarts the crashed ones by the policy.

    :meth:`check` is polled (``infra.process.wait_for_stop``): it never blocks on a
    pause, so Ctrl-C and the other processes are attended to meanwhile. It returns a
    description of why to give up, or None.
    """

    def __init__(self, stack: Stack, policy: RestartPolicy | None = None, *,
                 say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stack = stack
        self._policy = policy or RestartPolicy()
        self._say = say
        self._clock = clock
        self._histories: dict[str, CrashHistory] = {}
        self._restart_at: dict[str, float] = {}
        self._coming_back: set[str] = set()

    def check(self) -> str | None:
        now = self._clock()
        for child in list(self._stack.children):
            if child.name in self._restart_at:
                if now >= self._restart_at[child.name]:
                    del self._restart_at[child.name]
                    self._restart(child)
            elif not child.alive():
                if (gave_up := self._crashed(child, now)) is not None:
                    return gave_up
            elif child.name in self._coming_back and child.ready():
                self._coming_back.discard(child.name)
                self._say(f"{child.name} is ready again")
        return None

    def _crashed(self, child: ChildProcess, now: float) -> str | None:
        history = self._histories.setdefault(child.name, CrashHistory(self._policy))
        how = describe_exit(child.popen.returncode)
        delay = history.crashed(now)
        logger.info("stack.process.crashed name=%s returncode=%s recent_crashes=%d",
                    child.name, child.popen.returncode, history.recent)
        if delay is None:
            return (f"{child.name} {how}; it crashed {history.recent} times within "
                    f"{self._policy.window_s:.0f}s, giving up. See {child.log_path}")
        self._say(f"{child.name} {how}; restarting in {delay:.0f}s "
                  f"(restart {history.restarts})")
        self._restart_at[child.name] = now + delay
        self._coming_back.discard(child.name)
        return None

    def _restart(self, child: ChildProcess) -> None:
        self._stack.respawn(child)
        self._coming_back.add(child.name)
        logger.info("stack.process.restarted name=%s pid=%d", child.name, child.pid)
