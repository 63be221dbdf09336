"""Token events as the Agent Server's ``messages`` events (``stream_mode="messages-tuple"``):
``[AIMessageChunk as a dict, metadata]``, named ``messages|<namespace>`` for a subgraph's
call when subgraphs are streamed."""

from __future__ import annotations

from typing import Any

_CHUNK_TEMPLATE: dict[str, Any] | None = None


def message_chunk(ev: dict[str, Any]) -> dict[str, Any]:
    """A token as the ``AIMessageChunk`` dict of a ``messages`` event."""
    global _CHUNK_TEMPLATE
    from langchain_core.messages import AIMessageChunk

    if ev.get("tool_call_chunks"):
        return AIMessageChunk(
            content=ev.get("token") or "",
            id=ev.get("message_id"),
            tool_call_chunks=ev["tool_call_chunks"],
        ).model_dump()
    if _CHUNK_TEMPLATE is None:
        _CHUNK_TEMPLATE = AIMessageChunk(content="").model_dump()
    chunk = dict(_CHUNK_TEMPLATE)
    chunk["content"] = ev.get("token") or ""
    chunk["id"] = ev.get("message_id")
    return chunk


def messages_event(
    ev: dict[str, Any], base: dict[str, Any], subgraphs: bool
) -> tuple[str, list[Any]]:
    ns = list(ev.get("namespace") or [])
    meta = {
        **base,
        "langgraph_node": ev.get("node"),
        "langgraph_checkpoint_ns": "|".join(ns),
        "checkpoint_ns": "|".join(ns),
        "langgraph_task_id": ev.get("task_id"),
        "run_attempt": ev.get("attempt") or 1,
    }
    name = "messages|" + "|".join(ns) if ns and subgraphs else "messages"
    return name, [message_chunk(ev), meta]
