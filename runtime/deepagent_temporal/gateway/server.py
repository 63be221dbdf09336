"""Run the gateway with uvicorn: ``deepagent-temporal serve`` (see ``cli.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import uvicorn

from deepagent_temporal.gateway.app import Gateway, create_app, read_api_keys
from deepagent_temporal.gateway.graphs import Assistants

logger = logging.getLogger(__name__)


def uvicorn_config(app: Any, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """Config of the gateway's server: httptools when installed, no access log (one line
    per token stream would be noise), a short graceful shutdown."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        **kwargs,
    )


async def serve(
    client: Any,
    *,
    graph: str,
    task_queue: str,
    host: str,
    port: int,
    redis_url: str | None = None,
    api_keys_file: str | None = None,
    ready: Any = None,
) -> int:
    """Serve until SIGTERM / SIGINT. ``client`` is connected with the data converter."""
    redis = None
    if redis_url:
        from deepagent_temporal.transport.redis_reader import RedisStreamReader

        redis = RedisStreamReader(redis_url)
    keys = read_api_keys(api_keys_file)
    gateway = Gateway(client, Assistants(graph), task_queue, redis)
    app = create_app(gateway, keys, keys_file=api_keys_file)
    server = uvicorn.Server(uvicorn_config(app, host, port))
    server.install_signal_handlers = lambda: None  # ours below
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    if server.started:
        print(
            f"deepagent-temporal gateway ready: http://{host}:{port} "
            f"assistants {list(gateway.assistants.by_id)} task queue {task_queue!r} "
            f"redis {'on' if redis else 'off'} auth {'on' if keys or api_keys_file else 'off'}",
            flush=True,
        )
        if ready is not None:
            ready()
    await task
    return 0 if server.started else 2
