"""The Python ``langgraph-sdk`` (unmodified) against ``deepagent-temporal serve``."""

from __future__ import annotations

import pytest

from deepagent_temporal.examples import shapes

pytestmark = pytest.mark.integration

DEEP = "deepagent_temporal.examples.shapes:deep_agent"
INPUT = {"messages": [{"role": "user", "content": "What is 2 + 3?"}]}


def _texts(parts):
    """message id -> concatenated token text of ``messages`` events."""
    out: dict[str, str] = {}
    for p in parts:
        if p.event == "messages":
            chunk, meta = p.data
            out[chunk["id"]] = out.get(chunk["id"], "") + chunk["content"]
    return out


async def test_stream_messages_tuple_exact_once(sdk):
    thread = await sdk.threads.create(metadata={"purpose": "test"})
    parts = [
        p
        async for p in sdk.runs.stream(
            thread["thread_id"], DEEP, input=INPUT, stream_mode=["messages-tuple", "values"]
        )
    ]
    events = [p.event for p in parts]
    assert events[0] == "metadata" and events[-1] == "end", events
    texts = sorted(_texts(parts).values())
    assert texts == sorted([shapes.DEEP_SCRIPT[0]["content"], shapes.DEEP_SCRIPT[1]]), texts
    final = [p for p in parts if p.event == "values"][-1].data
    assert final["messages"][-1]["content"] == shapes.DEEP_SCRIPT[1]
