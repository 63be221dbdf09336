"""Runs on Temporal: a LangGraph run is one segment of a workflow execution.

A run that starts from input is a new execution of the thread's workflow id; its run id
is the Temporal run id. ``command={"resume": ...}`` continues the paused execution (a
signal) as the next segment; that run's id is a UUID derived from the execution's run id
and the segment number, so any replica resolves it without a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from deepagent_temporal.client.run_stream import RunStreamReader
from deepagent_temporal.contract import (
    RESUME_SIGNAL,
    RUN_RESUMED,
    RUN_TOPIC,
    WAIT_UPDATE,
    WORKFLOW_NAME,
    RunRequest,
    RunState,
)
from deepagent_temporal.gateway.graphs import Assistant, Assistants
from deepagent_temporal.gateway.threads import (
    ApiError,
    Threads,
    check_id,
    memo_of,
    now_iso,
)

#: what every run publishes, whatever the first client asked: a joiner may ask for any
STREAM_MODES = ["values", "updates", "tokens"]
_CONFIG_KEYS = ("recursion_limit", "tags", "metadata", "run_name")


def run_id_for(temporal_run_id: str, segment: int) -> str:
    if segment == 0:
        return temporal_run_id
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{temporal_run_id}#{segment}"))


@dataclass
class RunRef:
    """A LangGraph run: one segment of one workflow execution."""

    thread_id: str
    temporal_run_id: str
    segment: int
    start_offset: int
    assistant_id: str | None
    created_at: str
    metadata: dict[str, Any]
    stateless: bool = False
    multitask_strategy: str = "reject"
    stream_mode: list[str] | None = None

    @property
    def run_id(self) -> str:
        return run_id_for(self.temporal_run_id, self.segment)


class Runs:
    def __init__(
        self, client: Client, threads: Threads, assistants: Assistants, task_queue: str
    ) -> None:
        self.client = client
        self.threads = threads
        self.assistants = assistants
        self.task_queue = task_queue
        self.reader = RunStreamReader(client, threads_poll_interval())

    def handle(self, ref: RunRef) -> WorkflowHandle:
        return self.client.get_workflow_handle(ref.thread_id, run_id=ref.temporal_run_id)

    # ------------------------------------------------------------------ create

    def _assistant(self, body: dict[str, Any]) -> Assistant:
        assistant = self.assistants.get(body.get("assistant_id"))
        if assistant is None:
            raise ApiError(404, f"Assistant {body.get('assistant_id')!r} not found")
        return assistant

    async def create(self, thread_id: str | None, body: dict[str, Any]) -> RunRef:
        """Start a run (or resume the thread's interrupt with ``command.resume``)."""
        assistant = self._assistant(body)
        command = body.get("command") or {}
        if command and set(command) - {"resume"}:
            raise ApiError(422, "only command={'resume': ...} is supported")
        stateless = thread_id is None
        thread_id = check_id(thread_id or str(uuid.uuid4()))
        if "resume" in command:
            return await self._resume(thread_id, assistant, command["resume"], body)
        desc = None if stateless else await self.threads.describe(thread_id)
        if desc is None and not stateless and body.get("if_not_exists") != "create":
            raise ApiError(404, f"Thread {thread_id} not found")
        memo = await memo_of(desc) if desc is not None else {}
        prior = None
        if desc is not None and desc.workflow_type != WORKFLOW_NAME:  # the placeholder
            prior = memo.get("values") or None
        elif desc is not None:
            prior = await self._take_over(desc, body.get("multitask_strategy") or "reject")
        if not stateless:
            await self.threads.release(thread_id)
        created = now_iso()
        thread_meta = {
            **(memo.get("metadata") or {}),
            "graph_id": assistant.assistant_id,
            "assistant_id": assistant.assistant_id,
        }
        run_meta = dict(body.get("metadata") or {})
        config = _config(body, thread_id, assistant)
        request = RunRequest(
            graph=assistant.reference,
            input=body.get("input"),
            config=config,
            stream_modes=list(STREAM_MODES),
            prior_values=prior,
        )
        handle = await self.client.start_workflow(
            WORKFLOW_NAME,
            request,
            id=thread_id,
            task_queue=self.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={
                "metadata": thread_meta,
                "created_at": memo.get("created_at") or created,
                "assistant_id": assistant.assistant_id,
                "run_metadata": run_meta,
                "run_created_at": created,
                "stateless": stateless,
                "stream_mode": stream_modes(body.get("stream_mode")),
            },
        )
        return RunRef(
            thread_id,
            handle.result_run_id or handle.first_execution_run_id or "",
            0,
            0,
            assistant.assistant_id,
            created,
            run_meta,
            stateless,
            body.get("multitask_strategy") or "reject",
            stream_modes(body.get("stream_mode")),
        )

    async def _take_over(self, desc: Any, strategy: str) -> Any:
        """The thread's last run: wait for it, stop it or refuse; returns its values."""
        handle = self.client.get_workflow_handle(desc.id, run_id=desc.run_id)
        status = desc.status.name if desc.status is not None else "RUNNING"
        if status == "RUNNING":
            state = await self.threads.run_state(handle)
            paused = state is not None and state.status == "interrupted"
            if not paused and strategy == "reject":
                raise ApiError(
                    409,
                    f"Thread {desc.id} is busy with a run; use multitask_strategy "
                    "'interrupt' or 'enqueue', or wait for it",
                )
            if paused or strategy in ("interrupt", "rollback"):
                await handle.cancel(reason=f"a new run on the thread ({strategy})")
            await self._until_closed(handle, None if strategy == "enqueue" else 60.0)
            desc = await handle.describe()
            status = desc.status.name
            if paused:
                return state.values
        if status == "COMPLETED":
            return await handle.result()
        state = await self.threads.run_state(handle)
        return state.values if state is not None else None

    async def _until_closed(self, handle: WorkflowHandle, seconds: float | None) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            desc = await handle.describe()
            if desc.status is not None and desc.status.name != "RUNNING":
                return
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(409, f"the run on thread {handle.id} did not stop in time")
            await asyncio.sleep(0.1)

    async def _resume(
        self, thread_id: str, assistant: Assistant, value: Any, body: dict[str, Any]
    ) -> RunRef:
        desc = await self.threads.require(thread_id)
        handle = self.client.get_workflow_handle(thread_id, run_id=desc.run_id)
        state = (
            await self.threads.run_state(handle) if desc.workflow_type == WORKFLOW_NAME else None
        )
        if state is None or state.status != "interrupted":
            raise ApiError(409, f"Thread {thread_id} has no pending interrupt to resume")
        offset = await WorkflowStreamClient.create(self.client, thread_id).get_offset()
        await handle.signal(RESUME_SIGNAL, value)
        memo = await memo_of(desc)
        return RunRef(
            thread_id,
            desc.run_id,
            state.segment + 1,
            offset,
            memo.get("assistant_id") or assistant.assistant_id,
            now_iso(),
            dict(body.get("metadata") or {}),
        )

    # ----------------------------------------------------------- state update

    async def update_state(self, thread_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /threads/{tid}/state``: apply ``values`` through the graph's reducers as
        ``as_node``, on a thread no run is using; an execution of the thread's workflow
        that runs no node (the next run continues from its values, as from any run's)."""
        desc = await self.threads.require(thread_id)
        memo = await memo_of(desc)
        running = desc.status is None or desc.status.name == "RUNNING"
        if desc.workflow_type == WORKFLOW_NAME and running:
            state = await self.threads.run_state(self.handle_of(desc))
            if state is not None and state.status == "interrupted":
                raise ApiError(
                    409,
                    f"Thread {thread_id} is paused at an interrupt: updating the state of a "
                    "paused run is not supported by this gateway; resume it with "
                    "command={'resume': ...}, or start a new run",
                )
            raise ApiError(409, f"Thread {thread_id} is busy with a run; update it when idle")
        assistant = self.assistants.get(memo.get("assistant_id"))
        if assistant is None:
            raise ApiError(
                409, f"Thread {thread_id} has no run yet: its graph is unknown (run it first)"
            )
        as_node = body.get("as_node")
        nodes = getattr(assistant.graph, "nodes", None)
        if as_node is not None and nodes is not None and as_node not in nodes:
            raise ApiError(422, f"as_node {as_node!r} is not a node of {assistant.assistant_id}")
        if body.get("checkpoint") or body.get("checkpoint_id"):
            raise ApiError(422, "updating an earlier checkpoint is not supported")
        prior = memo.get("values") or None
        if desc.workflow_type == WORKFLOW_NAME:
            prior = await self._take_over(desc, "reject")
        await self.threads.release(thread_id)
        run_meta = {"source": "update", "as_node": as_node}
        handle = await self.client.start_workflow(
            WORKFLOW_NAME,
            RunRequest(
                graph=assistant.reference,
                input=None,
                config=_config({}, thread_id, assistant),
                stream_modes=[],
                prior_values=prior,
                update={"values": body.get("values"), "as_node": as_node},
            ),
            id=thread_id,
            task_queue=self.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={
                "metadata": memo.get("metadata") or {},
                "created_at": memo.get("created_at") or now_iso(),
                "assistant_id": assistant.assistant_id,
                "run_metadata": run_meta,
                "run_created_at": now_iso(),
                "state_update": True,
            },
        )
        try:
            await handle.result()
        except Exception as exc:  # noqa: BLE001 - the update was refused by the graph
            cause = getattr(exc, "cause", None) or exc
            raise ApiError(400, f"the state update failed: {cause}") from None
        state = await self.threads.state_of(await handle.describe())
        return {"checkpoint": state["checkpoint"]}

    def handle_of(self, desc: Any) -> WorkflowHandle:
        return self.client.get_workflow_handle(desc.id, run_id=desc.run_id)

    # ----------------------------------------------------------------- lookup

    async def resolve(self, thread_id: str, run_id: str) -> RunRef:
        """The run of a thread with this LangGraph run id (any execution, any segment)."""
        desc = await self.threads.require(thread_id)
        check_id(run_id, "run")
        candidates = [desc]
        if desc.run_id != run_id:
            async for ex in self.client.list_workflows(f"WorkflowId = '{thread_id}'"):
                if ex.run_id != desc.run_id and ex.workflow_type == WORKFLOW_NAME:
                    candidates.append(ex)
        for ex in candidates:
            if ex.workflow_type != WORKFLOW_NAME:
                continue
            handle = self.client.get_workflow_handle(thread_id, run_id=ex.run_id)
            memo = await memo_of(ex)
            if memo.get("state_update"):
                continue
            if ex.run_id == run_id:
                return self._ref(ex, memo, 0, 0)
            state = await self.threads.run_state(handle)
            for segment in range(1, (state.segment if state else 0) + 1):
                if run_id_for(ex.run_id, segment) == run_id:
                    if segment == state.segment:
                        return self._ref(ex, memo, segment, state.segment_offset)
                    return self._ref(ex, memo, segment, await self._segment_start(handle, segment))
        raise ApiError(404, f"Run {run_id} not found on thread {thread_id}")

    def _ref(self, ex: Any, memo: dict[str, Any], segment: int, offset: int) -> RunRef:
        return RunRef(
            ex.id,
            ex.run_id,
            segment,
            offset,
            memo.get("assistant_id"),
            memo.get("run_created_at") or ex.start_time.isoformat(),
            memo.get("run_metadata") or {},
            bool(memo.get("stateless")),
            stream_mode=list(memo.get("stream_mode") or ["values"]),
        )

    async def _segment_start(self, handle: WorkflowHandle, segment: int) -> int:
        items = self.reader.items(handle, [RUN_TOPIC], 0, time.monotonic() + 30)
        async with contextlib.aclosing(items):
            async for item in items:
                data = item.data
                if isinstance(data, dict) and data.get("kind") == RUN_RESUMED:
                    if int(data.get("segment") or 0) == segment:
                        return item.offset
        return 0

    async def list(self, thread_id: str, limit: int = 10, offset: int = 0) -> list[dict[str, Any]]:
        desc = await self.threads.require(thread_id)
        execs = [desc]
        async for ex in self.client.list_workflows(f"WorkflowId = '{thread_id}'"):
            if ex.run_id != desc.run_id:
                execs.append(ex)
        refs: list[RunRef] = []
        for ex in sorted(execs, key=lambda e: e.start_time, reverse=True):
            if ex.workflow_type != WORKFLOW_NAME:
                continue
            memo = await memo_of(ex)
            if memo.get("state_update"):
                continue  # a threads.update_state, not a run
            state = await self.threads.run_state(
                self.client.get_workflow_handle(ex.id, run_id=ex.run_id)
            )
            for segment in range((state.segment if state else 0), -1, -1):
                refs.append(self._ref(ex, memo, segment, 0))
        return [await self.as_json(r) for r in refs[offset : offset + limit]]

    # ------------------------------------------------------------------ status

    async def status(self, ref: RunRef) -> str:
        desc = await self.handle(ref).describe()
        status = desc.status.name if desc.status is not None else "RUNNING"
        state = await self.threads.run_state(self.handle(ref))
        if state is not None and state.segment > ref.segment:
            return "interrupted"  # a later run resumed it: this one ended at an interrupt
        if status == "RUNNING":
            if state is not None and state.status == "interrupted":
                return "interrupted"
            return "running"
        return {
            "COMPLETED": "success",
            "FAILED": "error",
            "TIMED_OUT": "timeout",
            "CANCELED": "interrupted",
            "TERMINATED": "interrupted",
        }.get(status, "error")

    async def as_json(self, ref: RunRef) -> dict[str, Any]:
        return {
            "run_id": ref.run_id,
            "thread_id": ref.thread_id,
            "assistant_id": ref.assistant_id,
            "created_at": ref.created_at,
            "updated_at": ref.created_at,
            "status": await self.status(ref),
            "metadata": ref.metadata,
            "kwargs": {},
            "multitask_strategy": ref.multitask_strategy,
        }

    async def cancel(self, ref: RunRef, *, wait: bool = False) -> None:
        handle = self.handle(ref)
        await handle.cancel(reason="cancelled through the gateway")
        if wait:
            await self._until_closed(handle, 60.0)

    async def wait(self, ref: RunRef) -> Any:
        """The run's final values, or ``{"__interrupt__": [...]}`` when it paused;
        ``{"__error__": ...}`` when it failed (the reference server's join body)."""
        handle = self.handle(ref)
        try:
            state = await handle.execute_update(WAIT_UPDATE, ref.segment, result_type=RunState)
        except Exception:  # noqa: BLE001 - closed: read how it ended
            state = None
        if state is not None and state.status == "interrupted":
            return {"__interrupt__": list(state.interrupts)}
        try:
            return await handle.result()
        except Exception as exc:  # noqa: BLE001
            return {"__error__": {"error": type(exc).__name__, "message": str(exc)}}


def stream_modes(value: Any, default: tuple[str, ...] = ("values",)) -> list[str]:
    """``stream_mode`` of a request: a name, a list, or a JSON list in a query string."""
    if value is None or value == [] or value == "":
        return list(default)
    if isinstance(value, str) and value.startswith("["):
        import json

        value = json.loads(value)
    return [value] if isinstance(value, str) else [str(v) for v in value]


def threads_poll_interval() -> Any:
    from datetime import timedelta

    return timedelta(milliseconds=5)


def _config(body: dict[str, Any], thread_id: str, assistant: Assistant) -> dict[str, Any]:
    raw = body.get("config") or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("configurable") or {}, dict):
        raise ApiError(422, "config and config.configurable must be JSON objects")
    out: dict[str, Any] = {k: raw[k] for k in _CONFIG_KEYS if raw.get(k) is not None}
    # JSON from the request: any value reaches the nodes (config["configurable"], get_config())
    configurable = {
        k: v for k, v in (raw.get("configurable") or {}).items() if not k.startswith("__")
    }
    if configurable:
        out["configurable"] = configurable
    out["metadata"] = {
        **(out.get("metadata") or {}),
        **(body.get("metadata") or {}),
        "graph_id": assistant.assistant_id,
        "assistant_id": assistant.assistant_id,
        "thread_id": thread_id,
    }
    return out
