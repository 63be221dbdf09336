"""The ``deepagent-temporal`` console script: worker process contract and ``run``.

Every worker here is a real child process started the way the operator starts it (env
contract of docs/architecture.md), against the real Temporal dev server and redis-server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from deepagent_temporal.dev.servers import free_port
from deepagent_temporal.dev.workerproc import WorkerProcess

pytestmark = pytest.mark.integration

EXAMPLE = "deepagent_temporal.examples.research_agent:agent"
FAILING = "deepagent_temporal.examples.shapes:failing"


def _cli() -> list[str]:
    exe = shutil.which("deepagent-temporal", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "deepagent_temporal"]


def _run(args, env=None, timeout=60):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("REDIS_URL", None) if env is not None and "REDIS_URL" not in env else None
    return subprocess.run(
        args, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_bad_graph_reference_fails_fast(temporal_server):
    for ref, needle in [
        ("no_such_module_xyz:agent", "cannot import module 'no_such_module_xyz'"),
        ("deepagent_temporal.examples.shapes:nope", "has no attribute 'nope'"),
        ("deepagent_temporal.examples.shapes", "must look like 'package.module:attribute'"),
        ("deepagent_temporal.examples.shapes:add", "factory"),
    ]:
        started = time.monotonic()
        proc = _run(
            [*_cli(), "worker"],
            env={
                "DEEPAGENT_GRAPH": ref,
                "TEMPORAL_ADDRESS": temporal_server.address,
                "TEMPORAL_TASK_QUEUE": "bad-graph",
            },
        )
        assert proc.returncode == 2, proc.stderr
        assert "error: bad graph reference" in proc.stderr and needle in proc.stderr
        assert "Traceback" not in proc.stderr
        assert time.monotonic() - started < 30


def test_unreachable_temporal_fails_fast():
    port = free_port()
    started = time.monotonic()
    proc = _run(
        [*_cli(), "worker"],
        env={
            "DEEPAGENT_GRAPH": EXAMPLE,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "TEMPORAL_TASK_QUEUE": "nowhere",
            "DEEPAGENT_CONNECT_TIMEOUT": "5",
        },
    )
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - started < 30
    assert f"cannot connect to Temporal at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


def test_missing_graph_or_queue_is_a_usage_error(temporal_server):
    proc = _run(
        [*_cli(), "worker"],
        env={
            "TEMPORAL_ADDRESS": temporal_server.address,
            "DEEPAGENT_GRAPH": "",
            "TEMPORAL_TASK_QUEUE": "q",
        },
    )
    assert proc.returncode == 2 and "DEEPAGENT_GRAPH" in proc.stderr


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return resp.status, resp.read().decode()


@pytest.fixture(scope="module")
def example_worker(start_worker):
    return start_worker(EXAMPLE, "cli", redis=True, env={"DEEPAGENT_SCRIPTED_TOKEN_DELAY": "0.002"})


def test_run_prints_tokens_live_and_health_endpoints(temporal_server, redis_server, example_worker):
    proc = _run(
        [
            *_cli(),
            "run",
            "--task-queue",
            example_worker.task_queue,
            "--address",
            temporal_server.address,
            "--redis-url",
            redis_server.url,
            "What is durable execution?",
        ],
        env={},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Let me search for background on durable execution first." in proc.stdout
    assert "Durable execution means every step of the agent is recorded by Temporal" in proc.stdout
    assert "completed" in proc.stderr

    port = example_worker.health_port
    assert _get(port, "/healthz") == (200, "ok\n")
    status, body = _get(port, "/readyz")
    assert status == 200 and '"temporal": "connected"' in body and '"redis": "up"' in body
    status, metrics = _get(port, "/metrics")
    assert status == 200
    assert 'deepagent_stream_tokens_published_total{transport="redis"}' in metrics
    assert 'deepagent_node_activities_total{node="model",outcome="completed"}' in metrics


def test_run_exits_non_zero_when_the_run_fails(temporal_server, tmp_path):
    with WorkerProcess(
        FAILING, temporal_server.address, f"cli-fail-{uuid.uuid4().hex[:6]}", log_dir=tmp_path
    ) as w:
        proc = _run(
            [
                *_cli(),
                "run",
                "--task-queue",
                w.task_queue,
                "--address",
                temporal_server.address,
                "x",
            ],
            env={},
        )
    assert proc.returncode == 1, proc.stderr
    assert "failed" in proc.stderr and "this node always fails" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_shuts_down_gracefully(temporal_server, tmp_path):
    w = WorkerProcess(
        EXAMPLE, temporal_server.address, f"cli-term-{uuid.uuid4().hex[:6]}", log_dir=tmp_path
    ).start()
    proc = w.process._proc
    assert proc is not None
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, w.log_tail()
    assert time.monotonic() - started < 20
    assert "shutting down" in w.log_tail()
