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
            chunk_position=ev.get("chunk_position"),
        ).model_dump()
    if _CHUNK_TEMPLATE is None:
        _CHUNK_TEMPLATE = AIMessageChunk(content="").model_dump()
    chunk = dict(_CHUNK_TEMPLATE)
    chunk["content"] = ev.get("token") or ""
    chunk["id"] = ev.get("message_id")
    chunk["chunk_position"] = ev.get("chunk_position")
    return chunk


def last_chunk(ev: dict[str, Any]) -> dict[str, Any]:
    """At a call's ``llm_end`` whose last token was not marked ``last``: the empty final
    chunk LangChain's chat models end a stream with (``chunk_position="last"``), which
    the capture does not carry as a token."""
    return {**ev, "token": "", "chunk_position": "last", "tool_call_chunks": None}


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


# ------------------------------------------------- messages of node outputs

_MESSAGE_TYPES = frozenset({"ai", "human", "system", "tool", "function", "chat", "remove"})


def _is_message(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("type") in _MESSAGE_TYPES and "content" in value
    return hasattr(value, "content") and getattr(value, "type", None) in _MESSAGE_TYPES


def _message_id(message: Any) -> str | None:
    return message.get("id") if isinstance(message, dict) else getattr(message, "id", None)


def messages_in(value: Any) -> list[Any]:
    """The messages of a node's output or of a state, as LangGraph's messages handler
    finds them: the value itself, a list of them, or a field (or a list in a field)."""
    if _is_message(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if _is_message(v)]
    found: list[Any] = []
    for field_value in value.values() if isinstance(value, dict) else ():
        if _is_message(field_value):
            found.append(field_value)
        elif isinstance(field_value, (list, tuple)):
            found.extend(v for v in field_value if _is_message(v))
    return found


def message_ids(value: Any) -> set[str]:
    return {mid for m in messages_in(value) if (mid := _message_id(m)) is not None}


def node_output_events(
    chunk: dict[str, Any], seen: set[str], base: dict[str, Any]
) -> list[tuple[str, list[Any]]]:
    """``messages`` events for the messages a node returned that were not streamed (a
    tool's result, a message a node built): LangGraph's ``messages`` stream mode sends
    them whole when the node ends, before its ``updates``. ``seen``: ids already sent
    or in the node's input (updated here)."""
    out: list[tuple[str, list[Any]]] = []
    for node, update in chunk.items():
        if node.startswith("__"):
            continue
        writes = update if isinstance(update, list) and not messages_in(update) else [update]
        for message in (m for w in writes for m in messages_in(w)):
            mid = _message_id(message)
            if mid is not None and mid in seen:
                continue
            if mid is not None:
                seen.add(mid)
            meta = {
                **base,
                "langgraph_node": node,
                "langgraph_checkpoint_ns": "",
                "langgraph_task_id": None,
                "run_attempt": 1,
            }
            out.append(("messages", [message, meta]))
    return out
