"""Durability: the worker process dies mid-answer; another worker finishes the run.

The killed attempt's tokens are retracted with a ``reset`` event, the next attempt
streams again on the new worker (which replays the workflow from its Event History),
and the client's single ``astream`` sees every token of the final answer exactly once.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from langchain_core.messages import AIMessage

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent
from deepagent_temporal.dev.workerproc import WorkerProcess
from tests.integration.test_agent_streaming import check_guarantees

pytestmark = pytest.mark.integration

GRAPH = "deepagent_temporal.examples.shapes:long_agent"


@pytest.mark.parametrize("transport", ["redis", "temporal"])
async def test_worker_killed_mid_stream_run_completes_on_another_worker(
    transport, temporal_server, temporal_client, redis_up, tmp_path
):
    queue = f"crash-{uuid.uuid4().hex[:6]}"
    redis_url = redis_up.url if transport == "redis" else None

    def make_worker(name):
        return WorkerProcess(
            GRAPH,
            temporal_server.address,
            queue,
            redis_url=redis_url,
            log_dir=tmp_path,
            name=name,
            env={"DEEPAGENT_HEARTBEAT_TIMEOUT_SECONDS": "2"},
        )

    first = make_worker("worker-a").start()
    second = make_worker("worker-b")
    agent = TemporalDeepAgent(
        None,
        temporal_client,
        task_queue=queue,
        graph_name=GRAPH,
        redis_stream_backend=RedisStreamBackend(redis_url) if redis_url else None,
    )
    config = {"configurable": {"thread_id": f"crash-{uuid.uuid4().hex}"}}
    events = []
    tokens = 0
    try:
        async for ev in agent.astream(
            {"messages": [{"role": "user", "content": "go"}]}, config, stream_mode="tokens"
        ):
            events.append(ev)
            if ev["type"] == "token":
                tokens += 1
                if tokens == 60:
                    first.process.stop(grace=1, sig=9)  # SIGKILL: no goodbye
                    await asyncio.to_thread(second.start)
        state = await agent.get_state(config)
    finally:
        first.stop()
        second.stop()
    assert state.metadata["status"] == "completed"
    check_guarantees(events, state.values["messages"])
    resets = [e for e in events if e["type"] == "reset"]
    assert len(resets) == 1 and resets[0]["node"] == "model"
    final = [m for m in state.values["messages"] if isinstance(m, AIMessage)][-1]
    assert final.content.endswith("word399.")
