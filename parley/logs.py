"""Structured logging with correlation ids.

Log records are JSON lines by default. Event names are dotted
(``gateway.frame.rejected``); a ``trace_id`` set with :func:`bind_trace`
(or passed in ``extra``) is attached to every line logged in that context, so
one message can be followed from the gateway through every agent.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "bind_trace", "configure_logging"]

_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def bind_trace(trace_id: str) -> contextvars.Token[str]:
    """Attach ``trace_id`` to every log line of the current context."""
    return _trace_id.set(trace_id)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace = getattr(record, "trace_id", None) or _trace_id.get()
        if trace:
            line["trace_id"] = trace
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    """Configure the root logger once for a Parley process."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that says nothing an operator needs at INFO.
    for noisy in ("aiokafka", "faust.transport", "mode", "websockets.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
