"""Hostile payloads against a real worker process: refused, nothing runs, the worker serves on.

An attacker who may start or signal workflows in the namespace sends raw
``binary/langgraph-msgpack`` payloads naming ``os.system``: as the workflow input of
``DeepAgentGraphRun`` and as the ``resume`` signal of a paused run. The worker (its own
process, on the real Temporal dev server) must refuse them before anything runs:

* workflow input: the run fails at once, visibly, with ``UnsafePayloadError`` (it does not
  hang on a workflow task retried forever);
* a signal: the SDK drops it and logs why; the paused run stays paused and a valid
  ``resume`` still finishes it.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import ormsgpack
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from deepagent_temporal.contract import (
    GET_STATE_QUERY,
    PAUSE_COUNT_QUERY,
    RESUME_SIGNAL,
    WAIT_UPDATE,
    WORKFLOW_NAME,
    RunRequest,
    RunState,
)
from deepagent_temporal.converter import ENCODING, data_converter

pytestmark = pytest.mark.integration

APPROVAL = "deepagent_temporal.examples.shapes:approval"
# LangGraph's msgpack extension codes: constructor with one arg / with kwargs
SINGLE_ARG, KW_ARGS = 0, 2


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(APPROVAL, "payload-safety")


@pytest.fixture
async def client(temporal_server) -> Client:
    return await Client.connect(
        temporal_server.address, namespace="default", data_converter=data_converter
    )


def _system(command: str) -> ormsgpack.Ext:
    return ormsgpack.Ext(SINGLE_ARG, ormsgpack.packb(("os", "system", command)))


def _raw(value: object) -> RawValue:
    """A payload as an attacker writes it: any bytes, with our encoding's metadata."""
    return RawValue(Payload(metadata={"encoding": ENCODING.encode()}, data=ormsgpack.packb(value)))


def _hostile_request(command: str) -> RawValue:
    # a well-formed RunRequest whose input carries the payload
    request = {"graph": None, "input": _system(command), "config": {}, "stream_modes": []}
    return _raw(
        ormsgpack.Ext(KW_ARGS, ormsgpack.packb((RunRequest.__module__, "RunRequest", request)))
    )


async def _run_approval_to_the_end(client: Client, worker, answer: str = "yes") -> None:
    """The worker still serves runs: a fresh one pauses, resumes and completes."""
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        RunRequest(graph=None, input={"messages": [{"role": "user", "content": "ship it"}]}),
        id=f"safe-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
    )
    state = await handle.execute_update(WAIT_UPDATE, 0, result_type=RunState)
    assert state.status == "interrupted"
    await handle.signal(RESUME_SIGNAL, answer)
    result = await asyncio.wait_for(handle.result(), 60)
    assert result["decision"] == answer


async def test_hostile_workflow_input_fails_the_run_and_runs_nothing(client, worker, tmp_path):
    marker = tmp_path / "pwned-by-input"
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        _hostile_request(f"touch {marker}"),
        id=f"hostile-input-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
    )
    # the run fails (it is not a workflow task retried forever), with the reason
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), 30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "UnsafePayloadError"
    assert cause.message.startswith("refusing to decode os.system: not an allowed type")
    assert cause.non_retryable
    assert not marker.exists()
    # nothing was scheduled: no activity ran for the hostile run
    history = await handle.fetch_history()
    kinds = {ev.event_type for ev in history.events}
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED in kinds

    await _run_approval_to_the_end(client, worker)
    assert not marker.exists()


async def _signal_processed(handle, signals: int) -> None:
    """Wait (30 s at most) until a workflow task completed after the ``signals``-th
    signal arrived."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = [ev.event_type for ev in (await handle.fetch_history()).events]
        signaled = [
            i
            for i, kind in enumerate(events)
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        if (
            len(signaled) >= signals
            and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[signaled[signals - 1] :]
        ):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the signal was not processed in time")


async def test_hostile_resume_signal_is_dropped_and_the_run_stays_paused(client, worker, tmp_path):
    marker = tmp_path / "pwned-by-signal"
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        RunRequest(graph=None, input={"messages": [{"role": "user", "content": "ship it"}]}),
        id=f"hostile-signal-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
    )
    state = await handle.execute_update(WAIT_UPDATE, 0, result_type=RunState)
    assert state.status == "interrupted"

    # the raw hostile payload, then the same hidden in a Command(resume=...)
    await handle.signal(RESUME_SIGNAL, _raw(_system(f"touch {marker}")))
    command = {"resume": _system(f"touch {marker}"), "goto": "finish"}
    await handle.signal(
        RESUME_SIGNAL,
        _raw(ormsgpack.Ext(KW_ARGS, ormsgpack.packb(("langgraph.types", "Command", command)))),
    )
    await _signal_processed(handle, 2)

    # not taken over: still paused at the same interrupt, nothing ran
    assert not marker.exists()
    assert await handle.query(PAUSE_COUNT_QUERY, result_type=int) == 1
    state = await handle.query(GET_STATE_QUERY, result_type=RunState)
    assert state.status == "interrupted" and tuple(state.next) == ("ask",)
    # visible: the worker logged why it dropped the signal
    deadline = time.monotonic() + 10
    while "refusing to decode os.system" not in worker.log_tail(400):
        assert time.monotonic() < deadline, worker.log_tail(80)
        await asyncio.sleep(0.2)
    assert "dropping the signal" in worker.log_tail(400)

    # a valid resume still finishes the run
    await handle.signal(RESUME_SIGNAL, "no")
    result = await asyncio.wait_for(handle.result(), 60)
    assert result["decision"] == "no"
    assert result["messages"][-1].content == "Decision: no"
    assert not marker.exists()

    await _run_approval_to_the_end(client, worker)
