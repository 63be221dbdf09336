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


BROKEN_GRAPHS = {
    "graph_keyerror": "import os\nAPI_KEY = os.environ['NO_SUCH_KEY_FOR_THIS_TEST']\n",
    "graph_runtimeerror": "raise RuntimeError('the module refuses to load')\n",
    "graph_missing_dependency": "import no_such_dependency_xyz  # noqa\n",
    "graph_misc": (
        "CONFIG = {'model': 'x'}\n"
        "def factory():\n"
        "    raise ValueError('the factory broke')\n"
        "def not_a_graph_factory():\n"
        "    return 42\n"
    ),
}


@pytest.mark.parametrize(
    "ref, reason",
    [
        (
            "graph_keyerror:agent",
            "cannot import module 'graph_keyerror': it raised "
            "KeyError: 'NO_SUCH_KEY_FOR_THIS_TEST' (at {dir}/graph_keyerror.py:2)",
        ),
        (
            "graph_runtimeerror:agent",
            "cannot import module 'graph_runtimeerror': it raised "
            "RuntimeError: the module refuses to load (at {dir}/graph_runtimeerror.py:1)",
        ),
        (
            "graph_missing_dependency:agent",
            "cannot import module 'graph_missing_dependency': it raised ModuleNotFoundError: "
            "No module named 'no_such_dependency_xyz' (at {dir}/graph_missing_dependency.py:1)",
        ),
        (
            "graph_misc:factory",
            "factory 'factory' raised ValueError: the factory broke (at {dir}/graph_misc.py:3)",
        ),
        ("graph_misc:CONFIG", "'CONFIG' is a dict, not a compiled LangGraph graph"),
        ("graph_misc:not_a_graph_factory", "factory 'not_a_graph_factory' returned an int"),
    ],
)
def test_a_graph_that_cannot_be_loaded_exits_2_with_one_line(ref, reason, tmp_path):
    """Whatever the graph module, attribute or factory raises (not only ImportError):
    exit 2 and one line naming the reference, the exception and where it was raised
    (the traceback only with DEEPAGENT_LOG_LEVEL=DEBUG). Loading comes before any
    connection, so no Temporal server is needed."""
    for name, source in BROKEN_GRAPHS.items():
        (tmp_path / f"{name}.py").write_text(source)
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "DEEPAGENT_GRAPH": ref,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_TASK_QUEUE": "broken-graph",
    }
    proc = _run([*_cli(), "worker"], env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: bad graph reference {ref!r}: "), lines[0]
    assert reason.format(dir=tmp_path) in lines[0]

    debug = _run([*_cli(), "worker"], env={**env, "DEEPAGENT_LOG_LEVEL": "DEBUG"})
    assert debug.returncode == 2
    assert debug.stderr.strip().splitlines()[-1].startswith("error: bad graph reference")
    if "raised" in reason:
        assert "Traceback" in debug.stderr, "DEBUG shows where user code raised"


def test_a_namespace_that_does_not_exist_exits_2_naming_it(temporal_server):
    proc = _run(
        [*_cli(), "worker"],
        env={
            "DEEPAGENT_GRAPH": EXAMPLE,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "TEMPORAL_NAMESPACE": "no-such-namespace",
            "TEMPORAL_TASK_QUEUE": "bad-namespace",
        },
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        f"error: Temporal namespace 'no-such-namespace' does not exist at "
        f"{temporal_server.address}" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


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
