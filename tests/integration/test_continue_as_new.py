"""Long runs continue as new, transparently: one thread, one stream, nothing lost or repeated.

The worker gets a tiny history budget so that a few dozen steps cross several
continue-as-new boundaries; the real budget (10 MB / 10,000 events) is exercised by
``make bench``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from langchain_core.messages import AIMessage
from langgraph.types import Command

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent
from deepagent_temporal.contract import WorkerEnv

pytestmark = pytest.mark.integration

GRAPH = "deepagent_temporal.examples.shapes:long_loop"
BUDGET = {WorkerEnv.name("history_max_events"): "120"}


@pytest.fixture(scope="module")
def worker_redis(start_worker):
    return start_worker(GRAPH, "can-redis", redis=True, env=BUDGET)


@pytest.fixture(scope="module")
def worker_temporal(start_worker):
    return start_worker(GRAPH, "can-temporal", env=BUDGET)


@pytest.fixture
def agent(transport, temporal_client, redis_server, worker_redis, worker_temporal):
    if transport == "redis" and not redis_server.process.running:
        redis_server.start()
    worker = worker_redis if transport == "redis" else worker_temporal
    backend = RedisStreamBackend(redis_server.url) if transport == "redis" else None
    return TemporalDeepAgent(
        None,
        temporal_client,
        task_queue=worker.task_queue,
        graph_name=GRAPH,
        redis_stream_backend=backend,
    )


def _config():
    return {"configurable": {"thread_id": f"can-{uuid.uuid4().hex}"}, "recursion_limit": 10_000}


def _texts(events):
    seen = Counter(
        (e["message_id"], e["index"]) for e in events if e["type"] in ("token", "snapshot")
    )
    assert all(n == 1 for n in seen.values()), "a token was delivered twice"
    texts: dict[str, str] = {}
    for e in events:
        if e["type"] in ("token", "snapshot"):
            texts[e["message_id"]] = texts.get(e["message_id"], "") + e["token"]
    return texts


def _ai(values):
    return {m.id: m.content for m in values["messages"] if isinstance(m, AIMessage)}


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_a_long_run_streams_exactly_once_across_boundaries(transport, agent):
    config = _config()
    inp = {"limit": 40, "note_bytes": 200}
    events, modes = [], Counter()
    async for mode, chunk in agent.astream(inp, config, stream_mode=["tokens", "updates"]):
        modes[mode] += 1
        if mode == "tokens":
            events.append(chunk)
    state = await agent.get_state(config)
    assert state.values["steps"] == 40 and len(state.values["notes"]) == 40
    assert await _continuations(agent, config) >= 2, "the run crossed boundaries"
    assert _texts(events) == _ai(state.values)
    assert len(_ai(state.values)) == 40
    assert modes["updates"] >= 80, "every node's update, across boundaries"
    assert events[-1]["type"] == "complete"


async def _continuations(agent, config) -> int:
    from deepagent_temporal.contract import GET_STATE_QUERY, RunState

    handle = agent.client.get_workflow_handle(config["configurable"]["thread_id"])
    state = await handle.query(GET_STATE_QUERY, result_type=RunState)
    return state.continuations


@pytest.mark.parametrize("transport", ["redis"])
async def test_a_joiner_midway_gets_the_rest(transport, agent):
    config = _config()
    first: list[dict] = []
    joined = None
    async for ev in agent.astream({"limit": 30, "note_bytes": 100}, config, stream_mode="tokens"):
        first.append(ev)
        if joined is None and sum(e["type"] == "llm_end" for e in first) == 12:
            joined = asyncio.create_task(_collect(agent, None, config))
    late = await joined
    state = await agent.get_state(config)
    everything = _texts(first)
    assert everything == _ai(state.values)
    rest = _texts(late)
    assert rest and all(everything[k] == v for k, v in rest.items())


@pytest.mark.parametrize("transport", ["redis"])
async def test_ainvoke_and_resume_follow_the_chain(transport, agent):
    """ainvoke and resume wait for the run's outcome across continue-as-new boundaries (the
    wait they hold must not keep the run from continuing)."""
    config = _config()
    paused = await asyncio.wait_for(
        agent.ainvoke({"limit": 24, "note_bytes": 100, "pause_at": 20}, config), 120
    )
    assert paused["steps"] == 19 and paused["__interrupt__"]
    assert await _continuations(agent, config) >= 1
    final = await asyncio.wait_for(agent.ainvoke(Command(resume="go on"), config), 120)
    assert final["steps"] == 24 and len(final["notes"]) == 24
    assert await _continuations(agent, config) >= 2, "the resumed part continued too"


async def _collect(agent, inp, config):
    return [ev async for ev in agent.astream(inp, config, stream_mode="tokens")]


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_an_interrupt_after_a_boundary_resumes(transport, agent):
    config = _config()
    first = await _collect(agent, {"limit": 24, "note_bytes": 100, "pause_at": 20}, config)
    paused = await agent.get_state(config)
    assert paused.interrupts and paused.values["steps"] == 19
    assert await _continuations(agent, config) >= 1
    rest = await _collect(agent, Command(resume="go on"), config)
    final = await agent.get_state(config)
    assert final.values["steps"] == 24
    assert {**_texts(first), **_texts(rest)} == _ai(final.values)
    assert not set(_texts(first)) & set(_texts(rest)), "nothing repeated after the resume"
