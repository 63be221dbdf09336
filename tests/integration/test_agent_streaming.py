"""Token streaming across processes: the worker is a ``deepagent-temporal worker`` child.

Real Temporal dev server + real redis-server; the client (this process) only shares the
graphs' import paths with the worker.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from langchain_core.messages import AIMessage

from deepagent_temporal import RunFailedError
from tests.integration.agents import client_agent, thread_config

pytestmark = pytest.mark.integration

SHAPES = "deepagent_temporal.examples.shapes"
GRAPHS = ",".join(
    f"{SHAPES}:{n}"
    for n in (
        "deep_agent",
        "fanout",
        "flaky_agent",
        "failing",
        "subagent_agent",
        "summarizing_agent",
    )
)


@pytest.fixture(scope="module")
def worker_redis(start_worker):
    return start_worker(GRAPHS, "stream-redis", redis=True)


@pytest.fixture(scope="module")
def worker_p1(start_worker):
    return start_worker(GRAPHS, "stream-p1")


@pytest.fixture
def make_agent(transport, temporal_client, redis_server, worker_redis, worker_p1):
    """Client agents for a graph, on the worker of the test's transport (the Redis path)."""
    redis = transport == "redis"
    worker = worker_redis if redis else worker_p1
    return lambda graph: client_agent(
        temporal_client, worker, graph, redis_server.url if redis else None
    )


def _config():
    return thread_config("t")


async def _collect(agent, inp, config):
    return [ev async for ev in agent.astream(inp, config, stream_mode="tokens")]


def check_guarantees(events, final_messages, nested=False):
    """seq strictly increasing; per message index 0..n-1; text == final content."""
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seq not strictly increasing"
    assert events[-1]["type"] == "complete"
    assert sum(e["type"] == "complete" for e in events) == 1
    resets = {(e.get("task_id"), e["attempt"]) for e in events if e["type"] == "reset"}
    by_msg = defaultdict(list)
    for e in events:
        if e["type"] != "token":
            continue
        if (e.get("task_id"), e["attempt"]) in resets:
            continue  # tokens of a failed attempt, dropped by the client on `reset`
        if nested and e.get("namespace"):
            continue  # a sub-agent's tokens: its messages are not in the parent state
        by_msg[e["message_id"]].append(e)
    ai = [m for m in final_messages if isinstance(m, AIMessage)]
    assert ai, "no AI messages in the final state"
    for msg in ai:
        toks = by_msg.get(msg.id)
        assert toks, f"no streamed tokens for message {msg.id}"
        assert [t["index"] for t in toks] == list(range(len(toks))), "index gap or repeat"
        assert "".join(t["token"] for t in toks) == msg.content
        if msg.tool_calls:
            chunks = [c for t in toks for c in t.get("tool_call_chunks") or []]
            assert any(c.get("name") == msg.tool_calls[0]["name"] for c in chunks)
    assert set(by_msg) == {m.id for m in ai}, "tokens of a message that is not in the result"


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_deep_agent_streams_every_token_once(transport, make_agent):
    agent = make_agent("deep_agent")
    config = _config()
    events = await _collect(agent, {"messages": [{"role": "user", "content": "2+3?"}]}, config)
    state = await agent.get_state(config)
    messages = state.values["messages"]
    ai = [m for m in messages if isinstance(m, AIMessage)]
    assert len(ai) == 2 and ai[0].tool_calls and ai[0].tool_calls[0]["name"] == "add"
    assert any(m.type == "tool" and m.content == "5" for m in messages)
    check_guarantees(events, messages)
    sources = {e["source"] for e in events if e["type"] == "token"}
    assert sources == {transport}
    assert {e["node"] for e in events if e["type"] == "token"} == {"model"}
    assert state.metadata["status"] == "completed"


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_send_fanout_streams_both_branches_interleaved(transport, make_agent):
    agent = make_agent("fanout")
    config = _config()
    events = await _collect(agent, {"topics": ["alpha", "beta"], "messages": []}, config)
    state = await agent.get_state(config)
    check_guarantees(events, state.values["messages"])
    assert {e["node"] for e in events if e["type"] == "token"} == {"write"}
    order = [e["message_id"] for e in events if e["type"] == "token"]
    assert len(set(order)) == 2
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    # the Redis path interleaves token by token; the Temporal path batch by batch (50 ms batches)
    minimum = 10 if transport == "redis" else 2  # 2: A..B..A at least
    assert switches >= minimum, f"branches were not interleaved ({switches} switches)"
    assert {e["source"] for e in events if e["type"] == "token"} == {transport}


async def test_messages_mode_and_mixed_modes(temporal_client, redis_server, worker_redis):
    agent = client_agent(temporal_client, worker_redis, "deep_agent", redis_server.url)
    config = _config()
    items = [
        item
        async for item in agent.astream(
            {"messages": [{"role": "user", "content": "2+3?"}]},
            config,
            stream_mode=["messages", "values", "tokens"],
        )
    ]
    modes = {m for m, _ in items}
    assert modes == {"messages", "values", "tokens"}
    final = [c for m, c in items if m == "values"][-1]
    chunks = [c for m, c in items if m == "messages"]
    for msg in (m for m in final["messages"] if isinstance(m, AIMessage)):
        text = "".join(ch.content for ch, meta in chunks if ch.id == msg.id)
        assert text == msg.content
    assert all(meta["langgraph_node"] == "model" for _, meta in chunks)
    check_guarantees([c for m, c in items if m == "tokens"], final["messages"])


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_failed_attempt_after_tokens_emits_reset(transport, make_agent):
    agent = make_agent("flaky_agent")
    config = _config()
    events = await _collect(agent, {"messages": [{"role": "user", "content": "hi"}]}, config)
    resets = [e for e in events if e["type"] == "reset"]
    assert len(resets) == 1 and resets[0]["attempt"] == 1
    first_try = [e for e in events if e["type"] == "token" and e["attempt"] == 1]
    assert first_try and all(e["seq"] < resets[0]["seq"] for e in first_try)
    state = await agent.get_state(config)
    check_guarantees(events, state.values["messages"])
    final = [m for m in state.values["messages"] if isinstance(m, AIMessage)][-1]
    assert final.content == "This answer survives a failed first attempt of the activity."


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_nested_subagent_tokens_carry_namespace(transport, make_agent):
    agent = make_agent("subagent_agent")
    config = _config()
    events = await _collect(agent, {"messages": [{"role": "user", "content": "2+3?"}]}, config)
    state = await agent.get_state(config)
    check_guarantees(events, state.values["messages"], nested=True)
    nested = [e for e in events if e["type"] == "token" and e.get("namespace")]
    assert nested and all(e["namespace"][0].startswith("tools:") for e in nested)
    assert {e["node"] for e in nested} == {"model"}
    assert [e["index"] for e in nested] == list(range(len(nested)))
    tool_msg = next(m for m in state.values["messages"] if m.type == "tool")
    assert "".join(e["token"] for e in nested) == tool_msg.content
    top = [e for e in events if e["type"] == "token" and not e.get("namespace")]
    assert top and {e["node"] for e in top} == {"model"}


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_create_agent_with_summarization_streams_every_call(transport, make_agent):
    agent = make_agent("summarizing_agent")
    config = _config()
    events = await _collect(agent, {"messages": [{"role": "user", "content": "2+3?"}]}, config)
    state = await agent.get_state(config)
    summary = [e for e in events if e["type"] == "token" and e.get("nostream")]
    assert summary and {e["node"] for e in summary} == {"SummarizationMiddleware.before_model"}
    assert "".join(e["token"] for e in summary) == "Summary: the user asked for 2+3."
    assert [e["index"] for e in summary] == list(range(len(summary)))
    assert state.values["messages"][0].content.endswith("Summary: the user asked for 2+3.")
    rest = [e for e in events if not e.get("nostream")]
    check_guarantees(rest, state.values["messages"])
    assert {e["source"] for e in events if e["type"] == "token"} == {transport}


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_late_client_joins_and_gets_every_token_from_the_start(transport, make_agent):
    first = make_agent("fanout")
    late = make_agent("fanout")
    config = _config()
    first_events = []
    joined = None
    async for ev in first.astream(
        {"topics": ["alpha", "beta"], "messages": []}, config, stream_mode="tokens"
    ):
        first_events.append(ev)
        if joined is None and sum(e["type"] == "token" for e in first_events) == 30:
            joined = asyncio.create_task(_collect(late, None, config))
    late_events = await joined
    state = await first.get_state(config)
    check_guarantees(first_events, state.values["messages"])
    check_guarantees(late_events, state.values["messages"])

    def tokens(evs):
        return [(e["message_id"], e["index"], e["token"]) for e in evs if e["type"] == "token"]

    assert sorted(tokens(late_events)) == sorted(tokens(first_events))


async def test_astream_ends_with_run_and_failed_run_raises(temporal_client, worker_p1):
    agent = client_agent(temporal_client, worker_p1, "failing")
    seen = []
    with pytest.raises(RunFailedError, match="this node always fails"):
        async for ev in agent.astream(
            {"messages": [{"role": "user", "content": "x"}]}, _config(), stream_mode="tokens"
        ):
            seen.append(ev)
    with pytest.raises(RunFailedError, match="this node always fails"):
        async for _ in agent.astream(
            {"messages": [{"role": "user", "content": "x"}]}, _config(), stream_mode="values"
        ):
            pass
