"""Redis failures during token streaming: Redis down before the run, killed mid-stream.

The worker is a separate ``deepagent-temporal worker`` process; Redis is a real
redis-server that the tests stop (SIGKILL) and restart.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from langchain_core.messages import AIMessage

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent
from tests.integration.test_agent_streaming import check_guarantees

pytestmark = pytest.mark.integration

GRAPH = "deepagent_temporal.examples.shapes:long_agent"


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(GRAPH, "failover", redis=True)


def _agent(client, worker, redis_url):
    return TemporalDeepAgent(
        None,
        client,
        task_queue=worker.task_queue,
        graph_name=GRAPH,
        redis_stream_backend=RedisStreamBackend(redis_url),
    )


async def _run(agent, kill_after=None, redis=None):
    config = {"configurable": {"thread_id": f"f-{uuid.uuid4().hex}"}}
    events = []
    tokens = 0
    async for ev in agent.astream(
        {"messages": [{"role": "user", "content": "go"}]}, config, stream_mode="tokens"
    ):
        events.append(ev)
        if ev["type"] == "token":
            tokens += 1
            if kill_after is not None and tokens == kill_after:
                redis.kill()
    state = await agent.get_state(config)
    return events, state


async def _wait_redis_healthy(worker, wait_s=20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        _, body = await asyncio.to_thread(worker.readyz)
        if body.get("redis") == "up":
            return
        await asyncio.sleep(0.2)


async def test_redis_down_before_run(temporal_client, redis_server, worker):
    redis_server.kill()
    try:
        events, state = await _run(_agent(temporal_client, worker, redis_server.url))
        assert state.metadata["status"] == "completed"
        check_guarantees(events, state.values["messages"])
        assert {e["source"] for e in events if e["type"] == "token"} == {"temporal"}
        status, body = await asyncio.to_thread(worker.readyz)
        assert status == 200 and body["redis"] == "down"  # ready anyway: failover is the design
    finally:
        redis_server.start()


@pytest.mark.parametrize("kill_after", [1, 30, 200, 405])
async def test_redis_killed_mid_stream(kill_after, temporal_client, redis_up, worker):
    await _wait_redis_healthy(worker)
    try:
        events, state = await _run(
            _agent(temporal_client, worker, redis_up.url), kill_after=kill_after, redis=redis_up
        )
        assert state.metadata["status"] == "completed"
        check_guarantees(events, state.values["messages"])
        final = [m for m in state.values["messages"] if isinstance(m, AIMessage)][-1]
        assert final.content.startswith("word0 word1") and final.content.endswith("word399.")
        sources = [e["source"] for e in events if e["type"] == "token"]
        assert "redis" in sources
        if kill_after < 400:  # 405 tokens in all: the last point kills Redis at the very end
            assert "temporal" in sources
    finally:
        if not redis_up.process.running:
            redis_up.start()
