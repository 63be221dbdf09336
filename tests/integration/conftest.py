"""Workers for integration tests: real `deepagent-temporal worker` processes."""

from __future__ import annotations

import uuid

import pytest

from deepagent_temporal.dev.workerproc import WorkerProcess


@pytest.fixture(scope="module")
def start_worker(temporal_server, redis_server, tmp_path_factory):
    """Start a worker process on a fresh task queue; every one is stopped with the module.

    ``task_queue`` joins another worker's queue. ``redis=True`` gives it the session's Redis (restarted first if a test stopped it), so
    tokens take the Redis path; otherwise they go through Temporal only.
    """
    started: list[WorkerProcess] = []

    def start(
        graph: str, name: str, *, redis: bool = False, task_queue: str | None = None, **options
    ) -> WorkerProcess:
        if redis and not redis_server.process.running:
            redis_server.start()
        worker = WorkerProcess(
            graph,
            temporal_server.address,
            task_queue or f"{name}-{uuid.uuid4().hex[:6]}",
            redis_url=redis_server.url if redis else None,
            log_dir=tmp_path_factory.mktemp(f"worker-{name}"),
            **options,
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
