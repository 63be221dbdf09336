"""Delivery guarantees at the edges a real user hits: resume, join, lost Redis streams,
clients without Redis, deadlines and cancellation (docs/architecture.md, "Guarantees").

Real Temporal dev server + real redis-server; the worker is its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

import pytest
import redis.asyncio as aioredis
from langchain_core.messages import AIMessage
from langgraph.types import Command

from deepagent_temporal import (
    RunNotFoundError,
    StreamTimeoutError,
)
from deepagent_temporal.contract import decode_entry, stream_key
from tests.integration.agents import client_agent, thread_config

pytestmark = pytest.mark.integration

SHAPES = "deepagent_temporal.examples.shapes"
GRAPHS = ",".join(f"{SHAPES}:{n}" for n in ("chat_approval", "deep_agent", "long_agent"))


@pytest.fixture(scope="module")
def worker_redis(start_worker):
    return start_worker(GRAPHS, "guarantees-redis", redis=True)


@pytest.fixture(scope="module")
def worker_temporal(start_worker):
    return start_worker(GRAPHS, "guarantees-temporal")


@pytest.fixture
def make_agent(transport, temporal_client, redis_server, worker_redis, worker_temporal):
    if transport == "redis" and not redis_server.process.running:
        redis_server.start()
    worker = worker_redis if transport == "redis" else worker_temporal
    url = redis_server.url if transport == "redis" else None
    return lambda graph: client_agent(temporal_client, worker, graph, url)


def _config():
    return thread_config("g")


async def _tokens(agent, inp, config, **kwargs):
    return [ev async for ev in agent.astream(inp, config, stream_mode="tokens", **kwargs)]


def _texts(events):
    """Text per message id from token and snapshot deltas, each (message, index) once."""
    seen, texts = set(), {}
    for e in events:
        if e["type"] not in ("token", "snapshot"):
            continue
        key = (e["message_id"], e["index"])
        assert key not in seen, f"delivered twice: {key}"
        seen.add(key)
        texts[e["message_id"]] = texts.get(e["message_id"], "") + e["token"]
    return texts


def _ai_texts(messages):
    return {m.id: m.content for m in messages if isinstance(m, AIMessage) and m.content}


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_resume_streams_exactly_what_follows_the_resume(transport, make_agent):
    agent = make_agent("chat_approval")
    config = _config()
    first = await _tokens(agent, {"messages": [{"role": "user", "content": "ship it?"}]}, config)
    paused = await agent.get_state(config)
    assert paused.interrupts, "the run pauses at the interrupt"
    ((draft_id, draft_text),) = _ai_texts(paused.values["messages"]).items()
    assert _texts(first) == {draft_id: draft_text}, "the pause ends the first call whole"

    rest = await _tokens(agent, Command(resume="yes"), config)
    final = await agent.get_state(config)
    after = {k: v for k, v in _ai_texts(final.values["messages"]).items() if k != draft_id}
    assert len(after) == 1
    assert _texts(rest) == after, "the resume stream carries only the tokens after it"
    assert not any(e.get("message_id") == draft_id for e in rest)
    assert rest[-1]["type"] == "complete"


async def test_resume_without_a_pending_interrupt_is_refused(temporal_client, worker_temporal):
    agent = client_agent(temporal_client, worker_temporal, "deep_agent")
    config = _config()
    await agent.ainvoke({"messages": [{"role": "user", "content": "2+3?"}]}, config)
    with pytest.raises(ValueError, match="no pending interrupt"):
        await _tokens(agent, Command(resume="yes"), config)


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_join_on_a_finished_thread_replays_and_never_starts_work(
    transport, make_agent, temporal_client
):
    agent = make_agent("deep_agent")
    config = _config()
    live = await _tokens(agent, {"messages": [{"role": "user", "content": "2+3?"}]}, config)
    handle = agent.client.get_workflow_handle(config["configurable"]["thread_id"])
    before = await handle.describe()
    history = len((await handle.fetch_history()).events)

    replay = await _tokens(agent, None, config)
    joined = [ev async for ev in agent.ajoin(config)]

    after = await handle.describe()
    assert after.run_id == before.run_id, "a join never starts a run"
    assert len((await handle.fetch_history()).events) == history, "no new work at all"
    assert _texts(replay) == _texts(live) == _texts(joined)
    values = [v async for v in agent.astream(None, config, stream_mode="values")]
    assert (
        values
        and values[-1]["messages"][-1].content == (await handle.result())["messages"][-1].content
    )


async def test_join_on_a_thread_without_a_run_is_an_error(temporal_client, worker_temporal):
    agent = client_agent(temporal_client, worker_temporal, "deep_agent")
    with pytest.raises(RunNotFoundError, match="no run"):
        await _tokens(agent, None, _config())


@pytest.mark.parametrize("loss", ["expired", "trimmed", "complete_entry_lost"])
async def test_joiner_gets_lost_redis_tokens_from_the_durable_record(
    loss, temporal_client, worker_redis, redis_server
):
    """Redis lost (part of) a run's stream: retained tokens once, the rest as snapshots."""
    if not redis_server.process.running:
        redis_server.start()
    agent = client_agent(temporal_client, worker_redis, "deep_agent", redis_server.url)
    config = _config()
    live = await _tokens(agent, {"messages": [{"role": "user", "content": "2+3?"}]}, config)
    wid = config["configurable"]["thread_id"]
    run_id = (await agent.client.get_workflow_handle(wid).describe()).run_id
    r = aioredis.from_url(redis_server.url)
    try:
        key = stream_key(wid, run_id)
        if loss == "expired":
            assert await r.delete(key) == 1
        elif loss == "complete_entry_lost":
            ((last_id, _),) = await r.xrevrange(key, count=1)
            assert await r.xdel(key, last_id) == 1
        else:  # the first LLM call's entries are gone, the second call's are retained
            second_call = None
            for entry_id, fields in await r.xrange(key):
                events = [e for e in decode_entry(list(itertools.chain(*fields.items())))]
                if any(e["type"] == "llm_start" for e in events) and second_call is None:
                    second_call = "first"
                elif any(e["type"] == "llm_start" for e in events):
                    second_call = entry_id
                    break
            assert second_call not in (None, "first")
            await r.xtrim(key, minid=second_call, approximate=False)
    finally:
        await r.aclose()

    started = time.monotonic()
    joined = await asyncio.wait_for(_tokens(agent, None, config), 30)
    final = await agent.client.get_workflow_handle(wid).result()
    assert _texts(joined) == _texts(live) == _ai_texts(final["messages"])
    snapshots = [e for e in joined if e["type"] == "snapshot"]
    if loss == "complete_entry_lost":
        assert not snapshots, "every token was retained"
        assert time.monotonic() - started < 5, "no waiting for an entry that never comes"
        return
    assert snapshots and all(e["snapshot"] for e in snapshots)
    if loss == "trimmed":
        assert any(e["type"] == "token" and e["source"] == "redis" for e in joined)


async def test_client_without_redis_gets_whole_calls_and_a_warning(
    temporal_client, worker_redis, redis_server, caplog
):
    if not redis_server.process.running:
        redis_server.start()
    agent = client_agent(temporal_client, worker_redis, "deep_agent")  # no Redis on this client
    config = _config()
    with caplog.at_level(logging.WARNING):
        events = await asyncio.wait_for(
            _tokens(agent, {"messages": [{"role": "user", "content": "2+3?"}]}, config), 60
        )
    final = await agent.get_state(config)
    assert _texts(events) == _ai_texts(final.values["messages"])
    assert {e["type"] for e in events} >= {"snapshot", "llm_start", "llm_end", "complete"}
    assert "RedisStreamBackend" in caplog.text and "Redis" in caplog.text


async def test_stream_deadline_leaves_the_run_going(temporal_client, worker_temporal):
    agent = client_agent(temporal_client, worker_temporal, "long_agent")
    config = _config()
    with pytest.raises(StreamTimeoutError, match="join it again"):
        await _tokens(agent, {"messages": [{"role": "user", "content": "go"}]}, config, timeout=1)
    rest = await _tokens(agent, None, config)
    assert rest[-1]["type"] == "complete"


async def test_leaving_the_stream_closes_its_redis_reader(
    temporal_client, worker_redis, redis_server
):
    if not redis_server.process.running:
        redis_server.start()
    agent = client_agent(temporal_client, worker_redis, "long_agent", redis_server.url)
    config = _config()
    r = aioredis.from_url(redis_server.url)

    async def subscribers() -> int:
        clients = await r.client_list()
        return sum(c.get("name") == "deepagent-stream-subscriber" for c in clients)

    try:
        stream = agent.astream(
            {"messages": [{"role": "user", "content": "go"}]}, config, stream_mode="tokens"
        )
        async with contextlib.aclosing(stream):
            async for ev in stream:
                if ev["type"] == "token":
                    assert await subscribers() == 1
                    break
        assert await subscribers() == 0
        await agent.client.get_workflow_handle(config["configurable"]["thread_id"]).terminate()
    finally:
        await r.aclose()


async def test_a_vanished_run_ends_the_stream_with_a_precise_error(
    temporal_client, worker_temporal
):
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

    agent = client_agent(temporal_client, worker_temporal, "long_agent")
    config = _config()
    wid = config["configurable"]["thread_id"]

    async def delete_soon() -> None:
        await asyncio.sleep(1.0)
        await temporal_client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=temporal_client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=wid),
            )
        )

    deleter = asyncio.create_task(delete_soon())
    with pytest.raises(RunNotFoundError, match="vanished"):
        await asyncio.wait_for(
            _tokens(agent, {"messages": [{"role": "user", "content": "go"}]}, config), 60
        )
    await deleter
