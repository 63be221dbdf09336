"""The gateway in this process (uvicorn on 127.0.0.1), a real worker process, Temporal
and Redis from the harness; clients are the unmodified LangGraph SDKs."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest
import uvicorn

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.converter import with_data_converter
from deepagent_temporal.dev.servers import free_port
from deepagent_temporal.gateway.app import Gateway, create_app
from deepagent_temporal.gateway.graphs import Assistants
from deepagent_temporal.gateway.server import uvicorn_config
from deepagent_temporal.transport.redis_reader import RedisStreamReader
from tests.integration.conftest import start_worker  # noqa: F401 - the shared fixture

SHAPES = "deepagent_temporal.examples.shapes"
GRAPHS = ",".join(
    [
        *(f"{SHAPES}:{n}" for n in ("deep_agent", "chat_approval", "long_agent")),
        "tests.integration.configurable_graph:graph",
    ]
)
API_KEY = "gateway-test-key"


@pytest.fixture(scope="module")
def gateway_worker(start_worker):  # noqa: F811
    # a short heartbeat timeout: a cancelled run's model call hears of it within ~1.6s
    env = WorkerEnv.render(heartbeat_timeout_seconds=2)
    return start_worker(GRAPHS, "gateway", redis=True, env=env)


@contextlib.asynccontextmanager
async def running_gateway(app):
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
async def gateway(temporal_client, redis_server, gateway_worker):
    """The gateway with an API key, over the worker's task queue and Redis."""
    gw = Gateway(
        with_data_converter(temporal_client),
        Assistants(GRAPHS),
        gateway_worker.task_queue,
        RedisStreamReader(redis_server.url),
    )
    async with running_gateway(create_app(gw, frozenset({API_KEY}))) as url:
        yield SimpleNamespace(url=url, api_key=API_KEY, gateway=gw, worker=gateway_worker)


@pytest.fixture
def sdk(gateway):
    """A Python ``langgraph-sdk`` client of the gateway."""
    from langgraph_sdk import get_client

    return get_client(url=gateway.url, api_key=gateway.api_key)
