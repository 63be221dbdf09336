"""Threads on Temporal: a thread is a workflow id, its runs are that id's executions.

Thread metadata lives in Temporal, in the memo of the thread's executions (each new run
copies it forward), so every gateway replica sees the same threads and nothing is kept
in Redis or in the gateway. A thread created before its first run (``POST /threads``) is
a placeholder execution of the workflow type ``DeepAgentThread`` on a task queue no
worker polls: it only carries the memo, and the first run terminates it. Searching
threads lists executions (Temporal visibility) and filters their memo in the gateway
(no custom search attributes to register).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionProto
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from deepagent_temporal.contract import GET_STATE_QUERY, WORKFLOW_NAME, RunState

THREAD_WORKFLOW = "DeepAgentThread"
THREAD_TASK_QUEUE = "deepagent-gateway-threads"
_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,200}$")


class ApiError(Exception):
    """An HTTP error with the reference server's body ``{"detail": ...}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_id(value: str, what: str = "thread") -> str:
    if not _ID.match(value or ""):
        raise ApiError(422, f"invalid {what} id {value!r}")
    return value


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def checkpoint_id(run_id: str, step: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{step}"))


async def memo_of(execution: Any) -> dict[str, Any]:
    try:
        return dict(await execution.memo())
    except Exception:  # noqa: BLE001 - an execution nobody gave a memo
        return {}


class Threads:
    """Thread records, states and histories."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def describe(self, thread_id: str) -> Any | None:
        """The thread's latest execution; None if there is none or it was deleted."""
        desc = await self._describe(thread_id)
        if desc is not None and desc.workflow_type == THREAD_WORKFLOW:
            if (await memo_of(desc)).get("deleted"):
                return None
        return desc

    async def _describe(self, thread_id: str) -> Any | None:
        try:
            return await self.client.get_workflow_handle(thread_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def release(self, thread_id: str) -> None:
        """Before a new execution: stop the thread's placeholder or tombstone if any."""
        desc = await self._describe(thread_id)
        if (
            desc is not None
            and desc.workflow_type == THREAD_WORKFLOW
            and desc.status is not None
            and desc.status.name == "RUNNING"
        ):
            with contextlib.suppress(RPCError):
                await self.client.get_workflow_handle(thread_id).terminate(reason="replaced")

    async def require(self, thread_id: str) -> Any:
        desc = await self.describe(check_id(thread_id))
        if desc is None:
            raise ApiError(404, f"Thread {thread_id} not found")
        return desc

    async def run_state(self, handle: WorkflowHandle) -> RunState | None:
        try:
            return await handle.query(GET_STATE_QUERY, result_type=RunState)
        except Exception:  # noqa: BLE001 - closed and past replay, or no worker
            return None

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        thread_id = check_id(str(body.get("thread_id") or uuid.uuid4()))
        desc = await self.describe(thread_id)
        if desc is not None:
            if body.get("if_exists") == "do_nothing":
                return await self.as_json(desc)
            raise ApiError(409, f"Thread {thread_id} already exists")
        created = now_iso()
        await self.release(thread_id)
        await self.client.start_workflow(
            THREAD_WORKFLOW,
            id=thread_id,
            task_queue=THREAD_TASK_QUEUE,
            memo={"metadata": dict(body.get("metadata") or {}), "created_at": created},
        )
        return {
            "thread_id": thread_id,
            "created_at": created,
            "updated_at": created,
            "metadata": dict(body.get("metadata") or {}),
            "status": "idle",
            "values": {},
            "interrupts": {},
            "config": {},
            "error": None,
        }

    async def status(self, desc: Any) -> tuple[str, RunState | None]:
        """Thread status (idle, busy, interrupted, error) and the run's state if read."""
        if desc.workflow_type != WORKFLOW_NAME:
            return "idle", None
        status = desc.status.name if desc.status is not None else "RUNNING"
        if status == "RUNNING":
            state = await self.run_state(self.client.get_workflow_handle(desc.id))
            if state is not None and state.status == "interrupted":
                return "interrupted", state
            return "busy", state
        return ("error" if status == "FAILED" else "idle"), None

    async def values(self, desc: Any, state: RunState | None = None) -> Any:
        if desc.workflow_type != WORKFLOW_NAME:
            return (await memo_of(desc)).get("values") or {}
        handle = self.client.get_workflow_handle(desc.id, run_id=desc.run_id)
        if state is None and desc.status is not None and desc.status.name == "COMPLETED":
            try:
                return await handle.result()
            except Exception:  # noqa: BLE001
                return {}
        state = state or await self.run_state(handle)
        return (state.values if state is not None else None) or {}

    async def as_json(self, desc: Any, *, with_values: bool = True) -> dict[str, Any]:
        memo = await memo_of(desc)
        status, state = await self.status(desc)
        interrupts: dict[str, Any] = {}
        if state is not None and state.interrupts:
            interrupts = {(state.next or ("__interrupt__",))[0]: list(state.interrupts)}
        updated = desc.close_time or desc.start_time
        return {
            "thread_id": desc.id,
            "created_at": memo.get("created_at")
            or (desc.start_time and desc.start_time.isoformat()),
            "updated_at": updated.isoformat() if updated else None,
            "metadata": memo.get("metadata") or {},
            "status": status,
            "values": (await self.values(desc, state)) if with_values else None,
            "interrupts": interrupts,
            "config": {},
            "error": state.error if state is not None else None,
        }

    async def search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        query = f"WorkflowType = '{WORKFLOW_NAME}' OR WorkflowType = '{THREAD_WORKFLOW}'"
        if body.get("ids"):
            ids = [check_id(str(i)) for i in body["ids"]]
            query = " OR ".join(f"WorkflowId = '{i}'" for i in ids)
        latest: dict[str, Any] = {}
        async for ex in self.client.list_workflows(query, limit=5000):
            have = latest.get(ex.id)
            if have is None or (ex.start_time or 0) > (have.start_time or 0):
                latest[ex.id] = ex
        wanted = dict(body.get("metadata") or {})
        status_filter = body.get("status")
        limit, offset = int(body.get("limit") or 10), int(body.get("offset") or 0)
        rows = sorted(latest.values(), key=lambda e: e.start_time, reverse=True)
        out: list[dict[str, Any]] = []
        skipped = 0
        for ex in rows:
            memo = await memo_of(ex)
            if memo.get("stateless") or memo.get("deleted"):
                continue
            meta = memo.get("metadata") or {}
            if any(meta.get(k) != v for k, v in wanted.items()):
                continue
            if status_filter:
                status, _ = await self.status(ex)
                if status != status_filter:
                    continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(ex)
            if len(out) >= limit:
                break
        return list(await asyncio.gather(*(self.as_json(ex) for ex in out)))

    async def delete(self, thread_id: str) -> None:
        """Delete the thread's executions and leave a tombstone.

        Temporal deletes a closed execution asynchronously (it may stay visible for a
        while); the tombstone, a ``DeepAgentThread`` execution with ``deleted`` in its
        memo, makes the thread gone for every replica at once, and the next
        ``POST /threads`` or run with that id replaces it.
        """
        await self.require(thread_id)
        handle = self.client.get_workflow_handle(thread_id)
        with contextlib.suppress(RPCError):
            await handle.terminate(reason="thread deleted through the gateway")
        runs = [ex.run_id async for ex in self.client.list_workflows(f"WorkflowId = '{thread_id}'")]
        for run_id in runs:
            await self.delete_execution(thread_id, run_id)
        await self.client.start_workflow(
            THREAD_WORKFLOW,
            id=thread_id,
            task_queue=THREAD_TASK_QUEUE,
            memo={"deleted": True, "created_at": now_iso()},
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            execution_timeout=timedelta(days=7),
        )

    async def delete_execution(self, workflow_id: str, run_id: str | None) -> None:
        try:
            await self.client.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=self.client.namespace,
                    workflow_execution=WorkflowExecutionProto(
                        workflow_id=workflow_id, run_id=run_id or ""
                    ),
                )
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise

    # ------------------------------------------------------------- state

    async def state(self, thread_id: str) -> dict[str, Any]:
        desc = await self.require(thread_id)
        return await self.state_of(desc)

    async def state_of(self, desc: Any) -> dict[str, Any]:
        memo = await memo_of(desc)
        state = None
        if desc.workflow_type == WORKFLOW_NAME:
            state = await self.run_state(
                self.client.get_workflow_handle(desc.id, run_id=desc.run_id)
            )
        values = await self.values(desc, state)
        step = state.step if state is not None else 0
        interrupts = list(state.interrupts) if state is not None else []
        nxt = list(state.next) if state is not None else []
        tasks = [
            {
                "id": checkpoint_id(desc.run_id, step * 1000 + i),
                "name": name,
                "path": ["__pregel_pull", name],
                "error": None,
                "interrupts": interrupts if i == 0 else [],
                "checkpoint": None,
                "state": None,
                "result": None,
            }
            for i, name in enumerate(nxt)
        ]
        return {
            "values": values,
            "next": nxt,
            "tasks": tasks,
            "metadata": {
                **(memo.get("metadata") or {}),
                "step": step,
                "source": "update" if memo.get("state_update") else "loop",
                "run_id": desc.run_id,
            },
            "created_at": (desc.close_time or desc.start_time).isoformat(),
            "checkpoint": {
                "thread_id": desc.id,
                "checkpoint_ns": "",
                "checkpoint_id": checkpoint_id(desc.run_id, step),
            },
            "parent_checkpoint": None,
            "interrupts": interrupts,
        }

    async def history(self, thread_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The final state of each run of the thread, newest first (one entry per run,
        not per superstep: the intermediate checkpoints live only in workflow memory)."""
        await self.require(thread_id)
        descs = []
        seen = set()
        latest = await self.describe(thread_id)
        if latest is not None:
            descs.append(latest)
            seen.add(latest.run_id)
        async for ex in self.client.list_workflows(f"WorkflowId = '{thread_id}'"):
            if ex.run_id not in seen and ex.workflow_type == WORKFLOW_NAME:
                seen.add(ex.run_id)
                descs.append(ex)
        descs.sort(key=lambda d: d.start_time, reverse=True)
        out = []
        for d in descs[:limit]:
            if d.workflow_type != WORKFLOW_NAME and out:
                continue
            out.append(await self.state_of(d))
        for newer, older in zip(out, out[1:], strict=False):
            newer["parent_checkpoint"] = older["checkpoint"]
        return out
