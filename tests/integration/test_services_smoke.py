"""Smoke tests proving the Temporal and Redis fixtures are the real servers."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from temporalio import activity, workflow
from temporalio.worker import Worker

pytestmark = pytest.mark.integration


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn
class ShoutWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_temporal_runs_a_workflow(temporal_client):
    queue = f"smoke-{uuid.uuid4().hex[:8]}"
    async with Worker(
        temporal_client, task_queue=queue, workflows=[ShoutWorkflow], activities=[shout]
    ):
        result = await temporal_client.execute_workflow(
            ShoutWorkflow.run, "hello", id=f"smoke-{uuid.uuid4()}", task_queue=queue
        )
    assert result == "HELLO"


async def test_redis_xadd_xread(redis_up):
    client = aioredis.from_url(redis_up.url, decode_responses=True)
    try:
        key = f"smoke:{uuid.uuid4().hex}"
        first = await client.xadd(key, {"token": "hel"})
        await client.xadd(key, {"token": "lo"})
        entries = await client.xread({key: "0-0"}, block=100)
        [(stream, items)] = entries
        assert stream == key
        assert [fields["token"] for _, fields in items] == ["hel", "lo"]
        assert items[0][0] == first
    finally:
        await client.aclose()


async def test_redis_can_be_killed_and_restarted(redis_up):
    client = aioredis.from_url(redis_up.url, decode_responses=True)
    try:
        await client.set("before", "1")
        redis_up.kill()
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()
        redis_up.start()
        assert await client.ping() is True
    finally:
        await client.aclose()
