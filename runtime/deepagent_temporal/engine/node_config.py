"""What of a node's RunnableConfig crosses into its activity.

The Temporal LangGraph plugin's ``strip_runnable_config`` / ``get_langgraph_config`` keep
LangGraph's own ``configurable`` keys (thread, checkpoint, task) and drop the caller's, so
a node reading ``config["configurable"]["user_id"]`` or ``get_config()`` in the activity
would see nothing of what the client passed. These put the caller's JSON-like values back.
"""

from __future__ import annotations

from typing import Any


def for_activity(config: Any) -> dict[str, Any]:
    """The ``config`` argument of a node, as its activity receives it."""
    from temporalio.langgraph._langgraph_config import strip_runnable_config

    return with_configurable(strip_runnable_config(config), user_configurable(config))


def langgraph_config() -> dict[str, Any]:
    """The LangGraph config of the node being called (in the workflow), as its activity
    restores it (``get_config()`` in the node)."""
    from langchain_core.runnables.config import var_child_runnable_config
    from temporalio.langgraph._langgraph_config import get_langgraph_config

    current = user_configurable(var_child_runnable_config.get())
    return with_configurable(get_langgraph_config(), current)


def restore(config: dict[str, Any], stream_writer: Any) -> Any:
    """In the activity: set the node's LangGraph config (what ``get_config()`` returns)
    from :func:`langgraph_config`'s, the caller's values included; -> the Runtime."""
    from langchain_core.runnables.config import var_child_runnable_config
    from temporalio.langgraph._langgraph_config import set_langgraph_config

    runtime = set_langgraph_config(config, stream_writer=stream_writer)
    user = user_configurable(config)
    if user:
        var_child_runnable_config.set(with_configurable(var_child_runnable_config.get(), user))
    return runtime


def user_configurable(config: Any) -> dict[str, Any]:
    """The caller's own ``configurable`` values (``user_id``, ``model``...), JSON-like ones.

    Why: the plugin's ``strip_runnable_config`` keeps LangGraph's own keys only, so a node
    reading ``config["configurable"]["user_id"]`` (or ``get_config()``) would get nothing
    in the activity. LangGraph's internal keys (``__pregel_*``, callables) never travel.
    """
    configurable = (config or {}).get("configurable") or {}
    return {
        k: v
        for k, v in configurable.items()
        if isinstance(k, str) and not k.startswith("__") and _json_like(v)
    }


def with_configurable(config: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``user`` under its LangGraph keys (LangGraph's own win)."""
    if not user:
        return config
    return {**config, "configurable": {**user, **(config.get("configurable") or {})}}


def _json_like(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if depth > 8:
        return False
    if isinstance(value, (list, tuple)):
        return all(_json_like(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v, depth + 1) for k, v in value.items())
    return False
