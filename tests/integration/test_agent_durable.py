"""Durable execution of graphs of every shape, worker in a separate process.

sync/async nodes, a sync routing function, ``Command``, a subgraph node, custom stream
events, interrupts + ``resume``, ``get_state``; and the Event History cost of the Redis path
token streaming, measured from the real history.
"""

from __future__ import annotations

import dataclasses

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from deepagent_temporal.converter import data_converter
from deepagent_temporal.engine.activity import NodeActivityOutput
from deepagent_temporal.examples import shapes
from tests.integration.agents import client_agent, thread_config

pytestmark = pytest.mark.integration

SHAPES = "deepagent_temporal.examples.shapes"
GRAPHS = ",".join(f"{SHAPES}:{n}" for n in ("shapes", "approval", "deep_agent"))


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(GRAPHS, "durable", redis=True)


@pytest.fixture(scope="module")
def worker_no_tokens(start_worker):
    return start_worker(f"{SHAPES}:deep_agent", "durable-nt", token_streaming=False)


def _config():
    return thread_config("d")


async def test_shapes_match_plain_langgraph(temporal_client, worker):
    expected = await shapes.shapes.ainvoke({"n": 0})
    agent = client_agent(temporal_client, worker, "shapes")
    result = await agent.ainvoke({"n": 0}, _config())
    assert result == expected
    assert result["trail"][-1] == "sub.inner" and result["n"] == 11


async def test_shapes_stream_values_updates_custom(temporal_client, worker):
    agent = client_agent(temporal_client, worker, "shapes")
    local = [
        c
        async for c in shapes.shapes.astream({"n": 0}, stream_mode=["values", "updates", "custom"])
    ]
    remote = [
        c
        async for c in agent.astream(
            {"n": 0}, _config(), stream_mode=["values", "updates", "custom"]
        )
    ]
    for mode in ("values", "updates"):
        assert [c for m, c in remote if m == mode] == [c for m, c in local if m == mode]
    # custom events come from activities: same events, possibly later than the updates
    assert sorted(str(c) for m, c in remote if m == "custom") == sorted(
        str(c) for m, c in local if m == "custom"
    )
    values_only = [c async for c in agent.astream({"n": 0}, _config(), stream_mode="values")]
    assert values_only[-1]["n"] == 11


async def test_interrupt_and_resume(temporal_client, worker):
    agent = client_agent(temporal_client, worker, "approval")
    config = _config()
    paused = await agent.ainvoke({"messages": [{"role": "user", "content": "ship it"}]}, config)
    assert paused["__interrupt__"][0].value == {"question": "Deploy?"}
    state = await agent.get_state(config)
    assert state.next == ("ask",)
    assert state.interrupts[0].value == {"question": "Deploy?"}
    assert state.metadata["status"] == "interrupted"
    final = await agent.resume(config, "yes")
    assert final["decision"] == "yes"
    assert final["messages"][-1].content == "Decision: yes"
    assert (await agent.get_state(config)).metadata["status"] == "completed"


async def test_interrupt_resume_via_astream_command(temporal_client, worker):
    agent = client_agent(temporal_client, worker, "approval")
    config = _config()
    first = [
        c
        async for c in agent.astream(
            {"messages": [{"role": "user", "content": "ship it"}]}, config, stream_mode="updates"
        )
    ]
    assert "__interrupt__" in first[-1]
    second = [c async for c in agent.astream(Command(resume="no"), config, stream_mode="updates")]
    assert second[-1] == {"finish": {"messages": [second[-1]["finish"]["messages"][0]]}}
    assert second[-1]["finish"]["messages"][0].content == "Decision: no"


def _history_bytes(history) -> int:
    return sum(ev.ByteSize() for ev in history.events)


async def _tokens_run(agent):
    config = _config()
    events = [
        ev
        async for ev in agent.astream(
            {"messages": [{"role": "user", "content": "2+3?"}]}, config, stream_mode="tokens"
        )
    ]
    handle = agent.client.get_workflow_handle(config["configurable"]["thread_id"])
    return events, await handle.fetch_history(), await handle.result()


async def test_redis_path_history_is_a_summary_per_llm_call(
    temporal_client, redis_server, worker, worker_no_tokens, record_property
):
    """Measured from the real Event History of a Redis-path run (2 LLM calls)."""
    if not redis_server.process.running:
        redis_server.start()
    streamed, hist_on, result = await _tokens_run(
        client_agent(temporal_client, worker, "deep_agent", redis_server.url)
    )
    tokens = [e for e in streamed if e["type"] == "token"]
    assert tokens and {e["source"] for e in tokens} == {"redis"}
    llm_calls = sum(isinstance(m, AIMessage) for m in result["messages"])
    assert llm_calls == 2

    converter = data_converter.payload_converter
    signals = 0
    summary_bytes = 0
    summaries = []
    for ev in hist_on.events:
        if ev.HasField("workflow_execution_signaled_event_attributes"):
            signals += 1
        if ev.HasField("activity_task_completed_event_attributes"):
            payloads = ev.activity_task_completed_event_attributes.result.payloads
            if not payloads:
                continue
            out = converter.from_payload(payloads[0])
            if isinstance(out, NodeActivityOutput) and out.token_summary:
                summaries.extend(out.token_summary)
                bare = converter.to_payload(dataclasses.replace(out, token_summary=None))
                summary_bytes += payloads[0].ByteSize() - bare.ByteSize()
    assert signals == 0, "The Redis path must not carry tokens through Temporal"
    assert len(summaries) == llm_calls
    assert sum(s["token_count"] for s in summaries) == len(tokens)
    per_call = summary_bytes / llm_calls
    _, hist_off, _ = await _tokens_run(
        client_agent(temporal_client, worker_no_tokens, "deep_agent")
    )
    on, off = _history_bytes(hist_on), _history_bytes(hist_off)
    record_property("redis_path_history_bytes_per_llm_call", per_call)
    record_property("history_bytes_tokens_on_off", f"{on}/{off}")
    print(
        f"history: {per_call:.0f} B of token summary per LLM call; whole run {on} B with "
        f"Redis-path tokens vs {off} B with token streaming off"
    )
    assert per_call <= 300, f"The Redis path added {per_call:.0f} B of history per LLM call"


async def test_thread_continues_across_runs(temporal_client, worker):
    """A second run on the same thread sees the first run's messages (like a checkpointer)."""
    local = shapes.deep_agent.builder.compile(checkpointer=InMemorySaver())
    lc = {"configurable": {"thread_id": "local"}}
    await local.ainvoke({"messages": [{"role": "user", "content": "2+3?"}]}, lc)
    expected = await local.ainvoke({"messages": [{"role": "user", "content": "again"}]}, lc)

    agent = client_agent(temporal_client, worker, "deep_agent")
    config = _config()
    first = await agent.ainvoke({"messages": [{"role": "user", "content": "2+3?"}]}, config)
    assert len(first["messages"]) == 4
    second = await agent.ainvoke({"messages": [{"role": "user", "content": "again"}]}, config)
    assert [(type(m).__name__, m.content) for m in second["messages"]] == [
        (type(m).__name__, m.content) for m in expected["messages"]
    ]
    assert second["messages"][:4] == first["messages"]
