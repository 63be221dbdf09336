"""Prometheus metrics of the token streaming path (capture, transport, failover).

All metrics live in prometheus-client's default registry, so whatever serves
``prometheus_client.generate_latest()`` (the worker's ``/metrics``) exposes them.
Importing this module twice (e.g. reloaded in tests) reuses the registered collectors.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram


def _get_or_create(cls: type, name: str, doc: str, **kwargs: Any) -> Any:
    # prometheus_client registers counters under "<name>" and "<name>_total".
    existing = getattr(REGISTRY, "_names_to_collectors", {})
    for candidate in (name, f"{name}_total"):
        if candidate in existing:
            return existing[candidate]
    return cls(name, doc, **kwargs)


TOKENS_PUBLISHED = _get_or_create(
    Counter,
    "deepagent_stream_tokens_published",
    "Token events handed to a transport, by transport (the Redis path or the Temporal path).",
    labelnames=("transport",),
)
EVENTS_REPLAYED = _get_or_create(
    Counter,
    "deepagent_stream_events_replayed",
    "Events re-sent through the Temporal path after a Redis failure (the client de-duplicates them).",
)
FAILOVERS = _get_or_create(
    Counter,
    "deepagent_stream_failovers",
    "LLM calls switched from the Redis path to the Temporal path, mid-call or at start.",
    labelnames=("reason",),
)
REDIS_PUBLISH_LATENCY = _get_or_create(
    Histogram,
    "deepagent_stream_redis_publish_seconds",
    "Latency of one pipelined Redis write (XADD batch + EXPIRE).",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REDIS_PIPELINE_EVENTS = _get_or_create(
    Histogram,
    "deepagent_stream_redis_pipeline_events",
    "Number of token events carried by one Redis pipeline.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
REDIS_ERRORS = _get_or_create(
    Counter,
    "deepagent_stream_redis_errors",
    "Failed Redis writes or probes.",
    labelnames=("op",),
)
CIRCUIT_STATE = _get_or_create(
    Gauge,
    "deepagent_stream_redis_circuit_open",
    "1 while the Redis circuit breaker is open or half-open (new calls take the Temporal path).",
)
TEMPORAL_BATCHES = _get_or_create(
    Counter,
    "deepagent_stream_temporal_batches",
    "Batches of token events handed to the Temporal path's publisher.",
)
LLM_CALLS = _get_or_create(
    Counter,
    "deepagent_stream_llm_calls",
    "LLM calls captured, by the transport that carried them.",
    labelnames=("transport",),
)

__all__ = [
    "CIRCUIT_STATE",
    "EVENTS_REPLAYED",
    "FAILOVERS",
    "LLM_CALLS",
    "REDIS_ERRORS",
    "REDIS_PIPELINE_EVENTS",
    "REDIS_PUBLISH_LATENCY",
    "TEMPORAL_BATCHES",
    "TOKENS_PUBLISHED",
]
