"""Settings of the action agent (``PARLEY_ACTION_*``).

Same conventions as :mod:`kernel.settings`: every setting has an environment
variable, a default and a help text; a value that cannot work stops the
process at start-up with the variable's name and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kernel.errors import ConfigError
from kernel.settings import EnvSettings, setting

__all__ = ["ActionSettings"]


@dataclass(frozen=True)
class ActionSettings(EnvSettings):
    """Knobs of the action agent. Build with :meth:`from_env`."""

    timeout_s: float = setting(
        10.0,
        "PARLEY_ACTION_TIMEOUT_S",
        "Seconds an action may run before its call is abandoned and a failed result "
        "(error_kind timeout) is sent; an action registered with its own timeout_s uses that.",
    )
    concurrency: int = setting(
        16,
        "PARLEY_ACTION_CONCURRENCY",
        "Actions a worker runs at once. While that many are running, further requests "
        "wait; the timeout bounds how long.",
    )

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s < math.inf:
            raise ConfigError("PARLEY_ACTION_TIMEOUT_S", str(self.timeout_s),
                              "a number of seconds > 0")
        if self.concurrency < 1:
            raise ConfigError("PARLEY_ACTION_CONCURRENCY", str(self.concurrency),
                              "a whole number >= 1")
