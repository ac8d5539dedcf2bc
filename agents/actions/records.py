"""The records of ``actions.requests`` and ``actions.results``, built and read.

Pure functions over the Avro records (schemas/action_request.avsc,
action_result.avsc), so that the dialogue step that asks (the producer of
requests, reader of results) and the action agent that answers agree on one
format without importing each other:

* :func:`action_request` builds a request from the envelope of the event whose
  turn asked for the call (a ``ChatUnderstood``, or a previous result), dated by that
  event: the same event decided again (a worker died before recording its turn) makes
  the same request, field for field, so the action's call under its idempotency key
  carries the same body too (a backend refuses a key reused for another request);
* :func:`action_result` builds the result of a request from an
  :class:`~agents.actions.registry.ActionOutcome`. Its ``event_id`` is the
  request's plus ``.a``: the same request run twice (the bus is at-least-once)
  yields the same id, and the dialogue step drops the repeat as it drops a
  repeated knowledge answer;
* :func:`read_result` turns a decoded result back into an ``ActionOutcome`` and the
  id of the request it answers.

Inputs and outputs travel as JSON objects in strings: slot values are JSON
(an amount is ``{"value": 50, "currency": "EUR"}``), which Avro could only
carry as a recursive union that no reader enjoys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agents.actions.registry import ActionContext, ActionOutcome, FailureKind
from streams.topics import ENVELOPE_FIELDS

__all__ = ["action_request", "action_result", "context_of", "epoch_ms", "parse_inputs",
           "read_result", "request_event_id", "result_event_id"]


def request_event_id(cause_event_id: str) -> str:
    """The id of the request that the event ``cause_event_id`` led to (one call per
    event at most: a flow waits for a result before it calls again)."""
    return f"{cause_event_id}.c"


def result_event_id(request_event_id: str) -> str:
    """The id of the result of request ``request_event_id``: the same for every run."""
    return f"{request_event_id}.a"


def action_request(envelope: Mapping[str, Any], action: str, inputs: Mapping[str, Any], *,
                   event_id: str | None = None, bot_version: str = "",
                   now_ms: int | None = None) -> dict[str, Any]:
    """An ``ActionRequest`` for the conversation of ``envelope`` (any conversation event).

    ``event_id`` defaults to :func:`request_event_id` of the envelope's; the timestamp to
    the envelope's own (``now_ms`` overrides it); ``inputs`` must be JSON-serialisable (a
    ``TypeError`` says which value is not).
    """
    return {
        **{name: envelope[name] for name in ENVELOPE_FIELDS},
        "event_id": event_id or request_event_id(envelope["event_id"]),
        "timestamp": epoch_ms(envelope["timestamp"]) if now_ms is None else now_ms,
        "payload": {
            "action": action,
            "inputs_json": json.dumps(dict(inputs), ensure_ascii=False, separators=(",", ":"),
                                      allow_nan=False),
            "bot_version": bot_version,
            "client_msg_id": envelope.get("payload", {}).get("client_msg_id", ""),
        },
    }


def epoch_ms(timestamp: datetime | int) -> int:
    """An event's ``timestamp`` in epoch milliseconds (Avro decodes timestamp-millis as an
    aware datetime; a record built here holds an int)."""
    if isinstance(timestamp, datetime):
        return int(timestamp.timestamp() * 1000)
    return int(timestamp)


def parse_inputs(request: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of a decoded request; ``ValueError`` when they are not a JSON object."""
    text = request["payload"].get("inputs_json") or "{}"
    try:
        inputs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"inputs_json is not JSON: {exc}") from exc
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs_json must be a JSON object, got {type(inputs).__name__}")
    return inputs


def context_of(request: Mapping[str, Any]) -> ActionContext:
    """What the action is told about the call."""
    return ActionContext(
        idempotency_key=request["event_id"], tenant_id=request["tenant_id"],
        conversation_id=request["conversation_id"], user_id=request["user_id"],
        channel=request["channel"], bot_version=request["payload"].get("bot_version", ""),
        requested_at_ms=epoch_ms(request["timestamp"]),
    )


def action_result(request: Mapping[str, Any], outcome: ActionOutcome, *,
                  now_ms: int | None = None) -> dict[str, Any]:
    """The ``ActionResult`` of ``request``."""
    payload = request["payload"]
    return {
        **{name: request[name] for name in ENVELOPE_FIELDS},
        "event_id": result_event_id(request["event_id"]),
        "timestamp": int(time.time() * 1000) if now_ms is None else now_ms,
        "payload": {
            "action": outcome.action,
            "ok": outcome.ok,
            "outputs_json": json.dumps(dict(outcome.outputs), ensure_ascii=False,
                                       separators=(",", ":")),
            "error": outcome.error or "",
            "error_kind": outcome.kind.value if outcome.kind is not None else "",
            "in_reply_to": request["event_id"],
            "duration_ms": outcome.duration_ms,
            "bot_version": payload.get("bot_version", ""),
            "client_msg_id": payload.get("client_msg_id", ""),
        },
    }


def read_result(result: Mapping[str, Any]) -> tuple[str, ActionOutcome]:
    """``(request event id, outcome)`` of a decoded ``ActionResult``.

    A result whose fields contradict each other (ok with an error, outputs that are not
    a JSON object, an unknown error kind) raises ``ValueError``: it was not written by
    :func:`action_result`, and the dialogue step dead-letters it.
    """
    payload = result["payload"]
    try:
        outputs = json.loads(payload.get("outputs_json") or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"outputs_json is not JSON: {exc}") from exc
    if not isinstance(outputs, dict):
        raise ValueError("outputs_json must be a JSON object")
    if payload["ok"]:
        if payload.get("error") or payload.get("error_kind"):
            raise ValueError("a successful result carries an error")
        outcome = ActionOutcome(payload["action"], True, outputs,
                                duration_ms=payload.get("duration_ms", 0))
    else:
        kind = FailureKind(payload.get("error_kind") or FailureKind.FAILED.value)
        outcome = ActionOutcome.failure(payload["action"], kind, payload.get("error") or "",
                                        payload.get("duration_ms", 0))
    return payload["in_reply_to"], outcome
