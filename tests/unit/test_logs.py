"""JSON log lines and the trace id that follows a message through the agents."""

from __future__ import annotations

import json
import logging

from kernel.logs import JsonFormatter


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "agents.test", "levelno": logging.DEBUG,
                                 "levelname": "DEBUG", "msg": "x.y.z n=%d", "args": (3,)})
    rec.__dict__.update(extra)
    return rec


def test_a_trace_id_passed_in_extra_is_a_field_of_the_line() -> None:
    line = json.loads(JsonFormatter("worker").format(record(trace_id="tr-1", partition=2)))
    assert (line["msg"], line["service"], line["logger"]) == ("x.y.z n=3", "worker", "agents.test")
    assert (line["trace_id"], line["partition"]) == ("tr-1", 2)


def test_a_line_without_a_trace_id_has_no_such_field() -> None:
    assert "trace_id" not in json.loads(JsonFormatter("worker").format(record()))
