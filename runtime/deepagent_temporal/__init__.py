"""Durable LangGraph / Deep Agents runs on Temporal with real-time token streaming."""

from __future__ import annotations

from typing import Any

__all__ = [
    "TemporalDeepAgent",
    "RedisStreamBackend",
    "TokenEvent",
    "TokenCapturingHandler",
    "StreamingNodeWrapper",
    "wrap_graph_for_streaming",
    "create_streaming_worker",
    "create_worker",
    "load_graph",
    "data_converter",
    "RunFailedError",
    "ThreadBusyError",
]

_LAZY = {
    "TemporalDeepAgent": ("deepagent_temporal.agent", "TemporalDeepAgent"),
    "RunFailedError": ("deepagent_temporal.agent", "RunFailedError"),
    "ThreadBusyError": ("deepagent_temporal.agent", "ThreadBusyError"),
    "RedisStreamBackend": ("deepagent_temporal.streaming", "RedisStreamBackend"),
    "TokenEvent": ("deepagent_temporal.streaming", "TokenEvent"),
    "TokenCapturingHandler": ("deepagent_temporal.streaming", "TokenCapturingHandler"),
    "StreamingNodeWrapper": ("deepagent_temporal.activity", "StreamingNodeWrapper"),
    "wrap_graph_for_streaming": ("deepagent_temporal.activity", "wrap_graph_for_streaming"),
    "create_streaming_worker": ("deepagent_temporal.worker", "create_streaming_worker"),
    "create_worker": ("deepagent_temporal.worker", "create_worker"),
    "load_graph": ("deepagent_temporal.worker", "load_graph"),
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
