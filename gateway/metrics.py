"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ACK_LATENCY",
    "CONNECTIONS",
    "FRAMES_REJECTED",
    "HANDSHAKES_REFUSED",
    "IN_FLIGHT",
    "MESSAGES_ACCEPTED",
    "MESSAGES_FAILED",
    "MESSAGES_RESENT",
    "RATE_LIMIT_UNAVAILABLE",
    "REPLIES_DELIVERED",
    "REPLIES_DUPLICATE",
    "REPLIES_INVALID",
    "SEND_QUEUE_OVERFLOWS",
]

CONNECTIONS = Gauge("parley_gateway_connections", "Open WebSocket connections.")
MESSAGES_ACCEPTED = Counter(
    "parley_gateway_messages_accepted_total", "Messages the broker acknowledged."
)
MESSAGES_FAILED = Counter(
    "parley_gateway_messages_failed_total",
    "Messages not accepted, by reason: a dependency failed (redis, kafka), the gateway "
    "was overloaded (overloaded), or the user or tenant was over its rate (rate_limited).",
    ["reason"],
)
MESSAGES_RESENT = Counter(
    "parley_gateway_messages_resent_total",
    "Messages a client sent again under the same client_msg_id (its ack lost to a dropped "
    "connection): acknowledged as the first try, not published again.",
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "parley_gateway_rate_limit_unavailable_total",
    "Messages let through unchecked because Redis could not check their rate limits "
    "(fail open: gateway/limits.py).",
)
IN_FLIGHT = Gauge(
    "parley_gateway_in_flight", "Messages on the bus without a reply yet (admission control)."
)
FRAMES_REJECTED = Counter(
    "parley_gateway_frames_rejected_total", "Client frames answered with an error.", ["code"]
)
HANDSHAKES_REFUSED = Counter(
    "parley_gateway_handshakes_refused_total",
    "/ws handshakes refused, by HTTP status: 400 bad parameters, 401 no or bad credentials, "
    "403 origin or conversation not allowed, 503 credentials not checkable now.",
    ["status"],
)
REPLIES_DELIVERED = Counter(
    "parley_gateway_replies_delivered_total", "Replies written to a client socket."
)
REPLIES_DUPLICATE = Counter(
    "parley_gateway_replies_duplicate_total",
    "Replies not written because the socket already had them (reprocessing, resume).",
)
REPLIES_INVALID = Counter(
    "parley_gateway_replies_invalid_total",
    "Replies on the reply topic that could not be delivered: undecodable, or bad_id "
    "(a tenant or conversation id that is not a valid id).",
    ["reason"],
)
ACK_LATENCY = Histogram(
    "parley_gateway_ack_latency_seconds",
    "Frame received → broker acknowledged.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SEND_QUEUE_OVERFLOWS = Counter(
    "parley_gateway_send_queue_overflows_total",
    "Connections closed (1008) because a client did not read: a write waited "
    "PARLEY_GATEWAY_SEND_TIMEOUT_S or frames piled up beyond PARLEY_GATEWAY_SEND_QUEUE.",
)
