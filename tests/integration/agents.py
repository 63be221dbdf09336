"""Client agents for the integration tests: one way to point a TemporalDeepAgent at a
worker process of the tests."""

from __future__ import annotations

import uuid

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent

SHAPES = "deepagent_temporal.examples.shapes"


def client_agent(client, worker, graph: str, redis_url: str | None = None) -> TemporalDeepAgent:
    """An agent for ``graph`` (a name in the shapes examples, or a full reference) on the
    worker's task queue; with ``redis_url`` it reads the Redis path too."""
    return TemporalDeepAgent(
        None,
        client,
        task_queue=worker.task_queue,
        graph_name=graph if ":" in graph else f"{SHAPES}:{graph}",
        redis_stream_backend=RedisStreamBackend(redis_url) if redis_url else None,
    )


def thread_config(prefix: str = "t") -> dict:
    """A config naming a fresh thread."""
    return {"configurable": {"thread_id": f"{prefix}-{uuid.uuid4().hex}"}}
