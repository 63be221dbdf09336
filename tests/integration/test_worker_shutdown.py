"""Worker shutdown during a rollout: SIGTERM drains, and a node cut short is not a failure.

Every worker is a real ``deepagent-temporal worker`` process against the real Temporal
dev server. The graph (written to a temporary directory, on the workers' PYTHONPATH) has
a node that runs until the test releases it, so the tests decide exactly when a node is
in flight; the node notes each attempt (worker pid, Temporal attempt) in a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from deepagent_temporal import TemporalDeepAgent
from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.dev.workerproc import WorkerProcess
from deepagent_temporal.engine.activity import NodeActivityInput

pytestmark = pytest.mark.integration

GRAPH_MODULE = "shutdown_test_graph"
GRAPH = f"{GRAPH_MODULE}:graph"

#: Attempts cut short by a worker shutdown must not count against a node's retry policy:
#: engine/attempts.py does it once engine/activity.py uses it (the node caller passes the
#: node's maximum_attempts in NodeActivityInput.max_attempts and schedules it without a
#: Temporal limit; the interceptor runs each attempt through attempts.run_attempt).
#: Until then, these tests are expected to fail.
shutdowns_not_counted = pytest.mark.xfail(
    "max_attempts" not in NodeActivityInput.__dataclass_fields__,
    reason="engine/activity.py does not use engine/attempts.py yet",
    strict=True,
)

GRAPH_SOURCE = textwrap.dedent(
    '''
    """A node that runs until its release file exists (or it is cancelled), or fails at
    once while its fail file exists."""

    import asyncio
    import operator
    import os
    from pathlib import Path
    from typing import Annotated, TypedDict

    from langgraph.graph import END, START, StateGraph
    from temporalio import activity


    class State(TypedDict, total=False):
        marks: str
        log: Annotated[list[str], operator.add]


    def _note(state, what):
        attempt = activity.info().attempt if activity.in_activity() else 0
        with open(Path(state["marks"]) / "attempts", "a") as f:
            f.write(f"{what} {os.getpid()} {attempt}\\n")


    async def slow(state):
        _note(state, "start")
        if (Path(state["marks"]) / "fail").exists():
            raise RuntimeError("the node failed on purpose")
        release = Path(state["marks"]) / "release"
        try:
            for _ in range(1200):
                if release.exists():
                    break
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            _note(state, "cancelled")
            raise
        _note(state, "end")
        return {"log": ["slow"]}


    async def after(state):
        return {"log": ["after"]}


    builder = StateGraph(State)
    builder.add_node("slow", slow)
    builder.add_node("after", after)
    builder.add_edge(START, "slow")
    builder.add_edge("slow", "after")
    builder.add_edge("after", END)
    graph = builder.compile(name="shutdown-test")
    '''
)


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("graphs")
    (path / f"{GRAPH_MODULE}.py").write_text(GRAPH_SOURCE)
    return os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH", "")) if p)


class Rollout:
    """Workers of one task queue, started and stopped the way a Deployment rolls."""

    def __init__(self, temporal_server, graph_path: str, log_dir: Path, grace: float) -> None:
        self.queue = f"shutdown-{uuid.uuid4().hex[:6]}"
        self.temporal_server = temporal_server
        self.graph_path = graph_path
        self.log_dir = log_dir
        self.grace = grace
        self.workers: list[WorkerProcess] = []
        self.marks = log_dir / "marks"
        self.marks.mkdir()

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            GRAPH,
            self.temporal_server.address,
            self.queue,
            log_dir=self.log_dir,
            name=f"worker-{len(self.workers)}",
            env={
                "PYTHONPATH": self.graph_path,
                WorkerEnv.name("shutdown_grace_seconds"): str(self.grace),
                WorkerEnv.name("heartbeat_timeout_seconds"): "5",
            },
        )
        self.workers.append(worker)
        return worker.start()

    def attempts(self, what: str = "start") -> list[tuple[int, int]]:
        path = self.marks / "attempts"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(p), int(a)) for w, p, a in (line.split() for line in lines) if w == what]

    async def wait_for(self, what: str, pid: int, within: float = 30) -> int:
        """Wait until the node did ``what`` in process ``pid``; return the attempt."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for p, attempt in self.attempts(what):
                if p == pid:
                    return attempt
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {what!r} from pid {pid} within {within}s: {self.attempts()}")

    def release(self) -> None:
        (self.marks / "release").touch()

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop(grace=5)


def _pid(worker: WorkerProcess) -> int:
    proc = worker.process._proc
    assert proc is not None
    return proc.pid


def _sigterm(worker: WorkerProcess) -> None:
    os.killpg(_pid(worker), signal.SIGTERM)


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def _exit_code(worker: WorkerProcess, within: float) -> int:
    proc = worker.process._proc
    assert proc is not None
    return await asyncio.to_thread(proc.wait, within)


async def _node_attempts(handle, node_activity: str) -> list:
    """The started events of ``node_activity`` and every failure / timeout in history."""
    started, failed = [], []
    bad = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    }
    scheduled: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if scheduled.get(attrs.scheduled_event_id, "").endswith(node_activity):
                started.append(attrs)
        elif event.event_type in bad:
            failed.append(event)
    return started, failed


async def _start_run(temporal_client, rollout: Rollout):
    agent = TemporalDeepAgent(
        None, temporal_client, task_queue=rollout.queue, graph_name="shutdown-test"
    )
    config = {"configurable": {"thread_id": f"shutdown-{uuid.uuid4().hex}"}}
    return await agent.astart({"marks": str(rollout.marks), "log": []}, config)


async def test_sigterm_drains_the_running_node_and_exits_0(
    temporal_server, temporal_client, graph_path, tmp_path
):
    """SIGTERM mid-node: /readyz turns 503 at once while /healthz stays 200, the node
    finishes on the draining worker within the grace period (one attempt, no failure in
    history), the process exits 0, and another worker carries the run to its end."""
    rollout = Rollout(temporal_server, graph_path, tmp_path, grace=20)
    try:
        old = rollout.start_worker()
        handle = await _start_run(temporal_client, rollout)
        assert await rollout.wait_for("start", _pid(old)) == 1
        new = await asyncio.to_thread(rollout.start_worker)

        _sigterm(old)
        deadline = time.monotonic() + 5
        while _status(old.health_port, "/readyz") != 503:
            assert time.monotonic() < deadline, "/readyz still 200 after SIGTERM"
            await asyncio.sleep(0.05)
        assert _status(old.health_port, "/healthz") == 200, "a draining worker is alive"
        status, body = old.readyz()
        assert status == 503 and body.get("shutting_down") is True, body
        await asyncio.sleep(0.5)
        assert old.process.running, "the worker must wait for its running node"

        rollout.release()
        assert await _exit_code(old, within=15) == 0, old.log_tail()
        assert await rollout.wait_for("end", _pid(old)) == 1
        result = await asyncio.wait_for(handle.result(), 30)
        assert new.process.running
    finally:
        rollout.stop_all()
    assert isinstance(result, dict) and result.get("log") == ["slow", "after"], result
    started, failed = await _node_attempts(handle, ".slow")
    assert [s.attempt for s in started] == [1], started
    assert failed == [], failed
    assert rollout.attempts("cancelled") == []


@shutdowns_not_counted
async def test_rolling_shutdowns_shorter_than_the_node_do_not_fail_the_run(
    temporal_server, temporal_client, graph_path, tmp_path
):
    """Grace shorter than the node, three rollouts in a row while it runs: each cut-short
    attempt is retried at once on the next worker, and the run completes although the
    node's retry policy allows 3 attempts (shutdowns are not failures)."""
    rollout = Rollout(temporal_server, graph_path, tmp_path, grace=0.5)
    try:
        current = rollout.start_worker()
        handle = await _start_run(temporal_client, rollout)
        assert await rollout.wait_for("start", _pid(current)) == 1
        for _ in range(3):
            nxt = await asyncio.to_thread(rollout.start_worker)
            started = time.monotonic()
            _sigterm(current)
            assert await _exit_code(current, within=15) == 0, current.log_tail()
            assert time.monotonic() - started < 10, "the grace period bounds the drain"
            await rollout.wait_for("cancelled", _pid(current))
            await rollout.wait_for("start", _pid(nxt), within=15)
            current = nxt
        rollout.release()
        result = await asyncio.wait_for(handle.result(), 30)
    finally:
        rollout.stop_all()
    assert isinstance(result, dict) and result.get("log") == ["slow", "after"], result
    started, _ = await _node_attempts(handle, ".slow")
    assert len(started) == 1, "retries of one activity: one started event, the last"
    last = started[0]
    assert last.attempt == 4, last
    assert last.last_failure.application_failure_info.type == "WorkerShutdown", last
    pids = [p for p, _ in rollout.attempts("start")]
    assert len(set(pids)) == 4, "each attempt ran on the next worker"


@shutdowns_not_counted
async def test_a_failing_node_still_has_three_attempts_after_a_shutdown(
    temporal_server, temporal_client, graph_path, tmp_path
):
    """Shutdowns are not counted, failures still are: after one attempt cut short by a
    rollout, a node that fails gets exactly its three attempts, then the run fails."""
    rollout = Rollout(temporal_server, graph_path, tmp_path, grace=0.5)
    try:
        old = rollout.start_worker()
        handle = await _start_run(temporal_client, rollout)
        assert await rollout.wait_for("start", _pid(old)) == 1
        new = await asyncio.to_thread(rollout.start_worker)
        old_pid, new_pid = _pid(old), _pid(new)
        (rollout.marks / "fail").touch()
        _sigterm(old)
        assert await _exit_code(old, within=15) == 0, old.log_tail()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 30)
    finally:
        rollout.stop_all()
    assert "the node failed on purpose" in _messages(failed.value)
    assert rollout.attempts("start") == [(old_pid, 1), (new_pid, 2), (new_pid, 3), (new_pid, 4)]
    started, _ = await _node_attempts(handle, ".slow")
    assert [s.attempt for s in started] == [4], started


def _messages(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__
    return " | ".join(parts)


async def test_a_second_signal_stops_waiting(
    temporal_server, temporal_client, graph_path, tmp_path
):
    """Ctrl-C twice (or SIGTERM twice): the worker exits at once, 128 + the signal."""
    rollout = Rollout(temporal_server, graph_path, tmp_path, grace=60)
    handle = None
    try:
        worker = rollout.start_worker()
        handle = await _start_run(temporal_client, rollout)
        await rollout.wait_for("start", _pid(worker))
        _sigterm(worker)
        await asyncio.sleep(0.5)
        assert worker.process.running, "draining"
        started = time.monotonic()
        _sigterm(worker)
        assert await _exit_code(worker, within=15) == 128 + signal.SIGTERM, worker.log_tail()
        assert time.monotonic() - started < 5
        assert "SIGTERM again: exiting without waiting" in worker.log_tail()
    finally:
        rollout.release()
        rollout.stop_all()
        if handle is not None:
            with contextlib.suppress(Exception):
                await handle.terminate()
