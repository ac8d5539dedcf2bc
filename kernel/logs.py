"""Structured logging with correlation ids.

Log records are JSON lines by default. Event names are dotted
(``gateway.frame.rejected``); a ``trace_id`` passed in ``extra`` becomes a field
of the line. A message's trace id is set by the gateway and copied onto every
event made from it; the NLU and dialogue steps log each event they handle at
debug level with it (``nlu.message.understood``, ``dialogue.turn.decided``), so
with ``PARLEY_LOG_LEVEL=DEBUG`` one message can be followed through the agents.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


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
        trace = getattr(record, "trace_id", None)
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
