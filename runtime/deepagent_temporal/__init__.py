"""Durable LangGraph / Deep Agents runs on Temporal with real-time token streaming.

Layout (one concern per package; ``docs/architecture.md`` tells the whole story):

* :mod:`.contract` - token events, stream names, run markers, the worker env (``WorkerEnv``);
* :mod:`.capture` - the LangChain callback handler that turns model streaming into events;
* :mod:`.transport` - the Redis path (writer, reader, circuit, replay) and the Temporal path;
* :mod:`.client` - ``TemporalDeepAgent`` and the merge of both paths for a client;
* :mod:`.engine` - the workflow, the node activities, the worker factory;
* :mod:`.converter` - the Temporal data converter (shared by client and engine);
* :mod:`.cli`, :mod:`.health`, :mod:`.metrics` - the process around a worker;
* :mod:`.dev`, :mod:`.examples` - development tooling and example graphs (never imported
  by the product packages; ``make lint`` checks it with import-linter).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TemporalDeepAgent",
    "RedisStreamBackend",
    "RedisStreamReader",
    "TokenStreamMerger",
    "TokenEvent",
    "WorkerEnv",
    "TokenCapturingHandler",
    "StreamingNodeWrapper",
    "wrap_graph_for_streaming",
    "create_streaming_worker",
    "create_worker",
    "load_graph",
    "data_converter",
    "RunFailedError",
    "ThreadBusyError",
    "RunNotFoundError",
    "StreamTimeoutError",
]

_LAZY = {
    "TemporalDeepAgent": ("deepagent_temporal.client.agent", "TemporalDeepAgent"),
    "RunFailedError": ("deepagent_temporal.client.agent", "RunFailedError"),
    "ThreadBusyError": ("deepagent_temporal.client.agent", "ThreadBusyError"),
    "RunNotFoundError": ("deepagent_temporal.client.run_stream", "RunNotFoundError"),
    "StreamTimeoutError": ("deepagent_temporal.client.run_stream", "StreamTimeoutError"),
    "TokenStreamMerger": ("deepagent_temporal.client.delivery", "TokenStreamMerger"),
    "RedisStreamBackend": ("deepagent_temporal.transport.redis_writer", "RedisStreamBackend"),
    "RedisStreamReader": ("deepagent_temporal.transport.redis_reader", "RedisStreamReader"),
    "TokenEvent": ("deepagent_temporal.contract", "TokenEvent"),
    "WorkerEnv": ("deepagent_temporal.contract", "WorkerEnv"),
    "TokenCapturingHandler": ("deepagent_temporal.capture.handler", "TokenCapturingHandler"),
    "StreamingNodeWrapper": ("deepagent_temporal.engine.activity", "StreamingNodeWrapper"),
    "wrap_graph_for_streaming": ("deepagent_temporal.engine.activity", "wrap_graph_for_streaming"),
    "create_streaming_worker": ("deepagent_temporal.engine.worker", "create_streaming_worker"),
    "create_worker": ("deepagent_temporal.engine.worker", "create_worker"),
    "load_graph": ("deepagent_temporal.engine.worker", "load_graph"),
    "data_converter": ("deepagent_temporal.converter", "data_converter"),
}


def __getattr__(name: str) -> Any:
    # Lazy: the workflow sandbox and the CLI import this package without paying for
    # LangGraph / Redis imports they do not need.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepagent_temporal' has no attribute {name!r}")
