"""The action agent: ``actions.requests`` → run the action → ``actions.results``.

Actions call business systems (a CRM, a ticketing system): seconds, not
milliseconds, and sometimes never. They run here, off the conversation's hot
path, as knowledge questions do (agents/knowledge/agent.py): the dialogue step
produces an ``ActionRequest`` keyed by conversation and goes on with other
conversations; this agent runs the action and produces an ``ActionResult``,
keyed by the same conversation, which the dialogue step reads with the
conversation's messages and continues the flow with.

* Concurrency: :func:`register_action_agent` defines a Faust agent with
  ``PARLEY_ACTION_CONCURRENCY`` actors on the topic. Each takes the next request
  of the worker's partitions, so one slow action holds up one actor, never the
  other conversations; with every actor busy, further requests wait (bounded
  concurrency: a worker never runs more calls than it was sized for), and the
  per-action timeout bounds that wait. Faust commits only offsets below the
  lowest unacknowledged event, so delivery stays at-least-once: after a crash a
  request may run again, with the same idempotency key (its event id) for the
  business system, and the same result event id for the dialogue step.
* Outcome: whatever the action does (unknown, inputs or outputs of the wrong
  shape, an exception, a timeout) the conversation gets a result, a failure
  when anything went wrong (:mod:`agents.actions.registry`), so a flow never
  waits forever and never claims what did not happen.
* Delivery: a result the broker does not take because it is unavailable is
  sent again, with growing pauses, until it is (``process_until_done``); the
  action is not run again for it.
* Poison: a request that does not decode, or whose tenant or conversation id
  cannot name a conversation (there is nobody to answer), goes to
  ``actions.requests.dlq`` with the reason (streams/dead_letters.py), and the
  stream moves on. No exception leaves the agent.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Histogram

from agents.actions.records import action_result, context_of, parse_inputs
from agents.actions.registry import ActionOutcome, ActionRegistry, FailureKind
from agents.actions.settings import ActionSettings
from kernel.errors import DecodeError
from streams.app import WorkerContext, produce, raw_topic
from streams.batching import process_until_done
from streams.codecs import codec_for
from streams.keys import InvalidIdError, validate_id
from streams.metrics import AGENT_EVENTS
from streams.topics import ACTIONS_REQUESTS, ACTIONS_RESULTS

__all__ = ["ACTION_SECONDS", "ActionsFor", "register_action_agent"]

logger = logging.getLogger(__name__)

ACTION_SECONDS = Histogram(
    "parley_action_seconds", "How long actions ran, by action and outcome (ok or the "
    "failure kind).", ["action", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


#: The actions a request runs with, by ``(tenant id, bot version)``: each bot version's
#: own, as its folder's integrations.yml configures them (parley/worker.py).
ActionsFor = Callable[[str, str], ActionRegistry]


def register_action_agent(ctx: WorkerContext, registry: ActionRegistry | ActionsFor,
                          settings: ActionSettings | None = None) -> Any:
    """Define the action agent on ``ctx.app``; returns the Faust agent.

    ``registry`` is one registry for every request, or the registry of each request's
    tenant and bot version (:data:`ActionsFor`). ``settings`` (default: from the
    environment) gives the concurrency and the timeout of actions registered without
    their own.
    """
    registry_for: ActionsFor = (registry if not isinstance(registry, ActionRegistry)
                                else lambda _tenant, _version: registry)
    settings = settings or ActionSettings.from_env()
    worker = ctx.settings
    requests_name = worker.topic(ACTIONS_REQUESTS)
    requests = raw_topic(ctx.app, requests_name)
    results = raw_topic(ctx.app, worker.topic(ACTIONS_RESULTS))
    request_codec = codec_for("action_request", worker.schema_registry_url, requests_name)
    result_codec = codec_for("action_result", worker.schema_registry_url,
                             results.get_topic_name())
    dead_letters = ctx.dead_letters

    async def reject(event: Any, error: Exception) -> None:
        await dead_letters.send(event, error, "actions")

    async def delivery_for(event: Any) -> Callable[[], Awaitable[None]]:
        """How to deliver the outcome of ``event``: its result, or the event to the DLQ."""
        try:
            request = request_codec.decode(event.value)
            validate_id("tenant id", request["tenant_id"])
            validate_id("conversation id", request["conversation_id"])
        except (DecodeError, InvalidIdError) as exc:
            return functools.partial(reject, event, exc)
        actions = registry_for(request["tenant_id"], request["payload"].get("bot_version", ""))
        outcome = await _run(actions, request, settings.timeout_s)
        ACTION_SECONDS.labels(outcome.action if outcome.kind is not FailureKind.UNKNOWN_ACTION
                              else "(unknown)",
                              "ok" if outcome.ok else str(outcome.kind)).observe(
            outcome.duration_ms / 1000)
        logger.info("action.result event_id=%s action=%s ok=%s kind=%s duration_ms=%d",
                    request["event_id"], outcome.action, outcome.ok,
                    outcome.kind, outcome.duration_ms)
        value = result_codec.encode(action_result(request, outcome))
        key = request["conversation_id"].encode()
        return functools.partial(produce, results, [(key, value)])

    handled = AGENT_EVENTS.labels("actions")

    @ctx.app.agent(requests, name=f"{worker.topic_prefix}actions",
                   concurrency=settings.concurrency)
    async def actions(stream: Any) -> None:
        async for event in stream.events():
            try:
                # Run once; the result is sent again, with growing pauses, while the
                # broker is unavailable (the dialogue step drops a repeated result).
                await process_until_done(await delivery_for(event), "actions")
            except Exception as exc:  # not a dependency's (those are retried): poison
                await reject(event, exc)
            handled.inc()

    return actions


async def _run(registry: ActionRegistry, request: dict[str, Any],
               default_timeout_s: float) -> ActionOutcome:
    action = request["payload"]["action"]
    try:
        inputs = parse_inputs(request)
    except ValueError as exc:
        return ActionOutcome.failure(action, FailureKind.INVALID_INPUTS, str(exc))
    return await registry.run(action, inputs, context_of(request),
                              default_timeout_s=default_timeout_s)
