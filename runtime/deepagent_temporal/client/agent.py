"""``TemporalDeepAgent``: the client API (and the worker factory) for one graph."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from langgraph.types import Command, StateSnapshot
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.service import RPCError, RPCStatusCode

from deepagent_temporal.client.run_stream import (
    RunNotFoundError,
    RunStreamReader,
    graph_events,
)
from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    GET_STATE_QUERY,
    GRAPH_TOPIC,
    PAUSE_COUNT_QUERY,
    RESUME_SIGNAL,
    RUN_TOPIC,
    TOKENS_TOPIC,
    WAIT_UPDATE,
    WORKFLOW_NAME,
    RunRequest,
    RunState,
)
from deepagent_temporal.converter import with_data_converter

GRAPH_MODES = ("values", "updates", "custom")
ALL_MODES = (*GRAPH_MODES, "tokens", "messages")


class RunFailedError(RuntimeError):
    """The run failed; raised by ``astream`` / ``ainvoke`` in the client process."""


class ThreadBusyError(RuntimeError):
    """A new run was started on a thread whose previous run is still open."""


#: default ``astream`` deadline: long enough for a deep agent's run, short enough that a
#: forgotten stream does not wait forever (``timeout=None`` waits without limit)
DEFAULT_STREAM_TIMEOUT = 3600.0
#: pause before asking a continued run's successor (the closing run answers at once)
CHAIN_RETRY_SECONDS = 0.2


def _serializable_config(config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    out: dict[str, Any] = {}
    for key in ("recursion_limit", "tags", "metadata", "run_name"):
        if key in config and config[key] is not None:
            out[key] = config[key]
    configurable = {
        k: v
        for k, v in (config.get("configurable") or {}).items()
        if not k.startswith("__") and not callable(v)
    }
    if configurable:
        out["configurable"] = configurable
    return out


class TemporalDeepAgent:
    """Run a compiled LangGraph graph (e.g. ``create_deep_agent(...)``) on Temporal.

    The same object serves both sides: ``create_worker()`` in the worker process,
    ``ainvoke`` / ``astream`` / ``get_state`` / ``resume`` in any client process. Both
    sides only need to agree on ``graph_name`` (default: the graph's name) and the task
    queue.
    """

    def __init__(
        self,
        graph: Any,
        client: Client,
        *,
        task_queue: str = "deepagent",
        enable_token_streaming: bool = True,
        redis_stream_backend: Any = None,
        graph_name: str | None = None,
        activity_options: dict[str, Any] | None = None,
        poll_interval: timedelta = timedelta(milliseconds=5),
    ) -> None:
        self.graph = graph
        self.client = with_data_converter(client)
        self.task_queue = task_queue
        self.enable_token_streaming = enable_token_streaming
        self.redis_stream_backend = redis_stream_backend
        # None (no graph in this process, e.g. the `run` CLI): the worker's only graph
        self.graph_name = graph_name or getattr(graph, "name", None)
        self.activity_options = activity_options
        self.poll_interval = poll_interval
        self._reader = RunStreamReader(self.client, poll_interval)

    # ---------------------------------------------------------------- worker

    def create_worker(self, **kwargs: Any) -> Any:
        # The one worker-side convenience of this client object (lazy; import-linter
        # allows exactly this import).
        from deepagent_temporal.engine.worker import create_streaming_worker

        if self.graph is None:
            raise ValueError("create_worker() needs the graph itself")
        return create_streaming_worker(
            self.graph,
            self.client,
            self.task_queue,
            graph_name=self.graph_name,
            redis_stream_backend=self.redis_stream_backend,
            enable_token_streaming=self.enable_token_streaming,
            activity_options=self.activity_options,
            **kwargs,
        )

    # ----------------------------------------------------------------- runs

    @staticmethod
    def workflow_id_for(config: dict[str, Any] | None) -> str | None:
        thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
        return str(thread_id) if thread_id is not None else None

    def _handle(self, config: dict[str, Any] | None) -> WorkflowHandle:
        wid = self.workflow_id_for(config)
        if wid is None:
            raise ValueError("config['configurable']['thread_id'] names the run")
        return self.client.get_workflow_handle(wid)

    async def astart(
        self,
        input: Any,
        config: dict[str, Any] | None = None,
        *,
        stream_modes: list[str] | None = None,
        **start_kwargs: Any,
    ) -> WorkflowHandle:
        """Start a run; returns its workflow handle (the workflow id is the thread id)."""
        wid = self.workflow_id_for(config)
        prior = await self._prior_values(wid) if wid else None
        wid = wid or f"deepagent-{uuid.uuid4().hex}"
        request = RunRequest(
            graph=self.graph_name,
            input=input,
            config=_serializable_config(config),
            stream_modes=list(stream_modes or []),
            prior_values=prior,
        )
        return await self.client.start_workflow(
            WORKFLOW_NAME,
            request,
            id=wid,
            task_queue=self.task_queue,
            **start_kwargs,
        )

    async def _prior_values(self, workflow_id: str) -> Any:
        """Final values of the thread's last run (None for a new thread).

        Raises if a run is still open on the thread (resume it, or wait for it).
        """
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        status = desc.status.name if desc.status is not None else "RUNNING"
        if status == "RUNNING":
            raise ThreadBusyError(
                f"thread {workflow_id!r} has a run in progress; resume it "
                "(Command(resume=...)) or wait for it to finish"
            )
        if status == "COMPLETED":
            return await handle.result()
        try:  # failed / terminated / ...: continue from its last state
            state: RunState = await handle.query(GET_STATE_QUERY, result_type=RunState)
            return state.values
        except Exception:  # noqa: BLE001 - no state to continue from
            return None

    async def _wait(self, handle: WorkflowHandle, after_pauses: int) -> RunState | None:
        try:
            return await handle.execute_update(WAIT_UPDATE, after_pauses, result_type=RunState)
        except (WorkflowUpdateFailedError, RPCError):
            return None

    async def _outcome(self, handle: WorkflowHandle, after_pauses: int) -> Any:
        state = await self._wait(handle, after_pauses)
        while state is not None and state.status == "running":
            # The run continued as new: wait on the chain's latest run (no run id). An
            # update that still reaches the closing run is answered at once, hence the pause.
            handle = self.client.get_workflow_handle(handle.id)
            await asyncio.sleep(CHAIN_RETRY_SECONDS)
            state = await self._wait(handle, after_pauses)
        if state is not None and state.status == "interrupted":
            values = state.values if isinstance(state.values, dict) else {"value": state.values}
            return {**values, "__interrupt__": list(state.interrupts)}
        return await handle.result()

    async def ainvoke(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run to completion (or to the next interrupt) and return the graph's values.

        ``ainvoke(Command(resume=value), config)`` resumes an interrupted run.
        """
        if isinstance(input, Command) and input.resume is not None:
            return await self.resume(config, input.resume)
        handle = await self.astart(input, config, **kwargs)
        return await self._outcome(handle, 0)

    async def get_state(self, config: dict[str, Any]) -> StateSnapshot:
        handle = self._handle(config)
        state: RunState = await handle.query(GET_STATE_QUERY, result_type=RunState)
        return StateSnapshot(
            values=state.values if state.values is not None else {},
            next=tuple(state.next),
            config={"configurable": {"thread_id": handle.id}},
            metadata={"status": state.status, "step": state.step},
            created_at=None,
            parent_config=None,
            tasks=(),
            interrupts=tuple(state.interrupts),
        )

    async def resume(self, config: dict[str, Any], value: Any = None, *, wait: bool = True) -> Any:
        """Answer the pending interrupt of the run named by ``config`` with ``value``.

        With ``wait`` (default) returns like ``ainvoke``: the final values, or the values
        with ``__interrupt__`` when the run pauses again.
        """
        handle = self._handle(config)
        pauses = await handle.query(PAUSE_COUNT_QUERY, result_type=int)
        await handle.signal(RESUME_SIGNAL, value)
        if not wait:
            return None
        return await self._outcome(handle, pauses)

    # -------------------------------------------------------------- streaming

    async def astream(
        self,
        input: Any,
        config: dict[str, Any] | None = None,
        *,
        stream_mode: str | list[str] = "values",
        # a deadline, not asyncio.timeout: the caller's code runs between our yields
        timeout: float | None = DEFAULT_STREAM_TIMEOUT,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Stream a run: ``values``, ``updates``, ``custom``, ``tokens`` or ``messages``.

        - ``astream(input, config)`` starts a run on the thread and streams it.
        - ``astream(Command(resume=v), config)`` answers the pending interrupt and streams
          exactly what the run produces after it.
        - ``astream(None, config)`` never starts work: it joins the thread's current run
          and streams its current segment (since the last resume) from its start; on a
          finished thread it replays the last segment while the streams are retained.
          :class:`RunNotFoundError` if the thread has no run.

        Ends when the run ends or pauses at an interrupt; raises :class:`RunFailedError`
        when the run fails, :class:`StreamTimeoutError` after ``timeout`` seconds
        (default one hour; None waits without limit).
        Leaving the loop early closes the stream's Redis and Temporal resources (use
        ``contextlib.aclosing`` to close them at once). ``messages`` yields LangGraph-style
        ``(AIMessageChunk, metadata)`` tuples (no ``reset``; prefer ``tokens`` when
        retries matter). With a list of modes, yields ``(mode, chunk)`` tuples.
        """
        modes = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode)
        for mode in modes:
            if mode not in ALL_MODES:
                raise ValueError(f"unknown stream_mode {mode!r}; expected one of {ALL_MODES}")
        multi = not isinstance(stream_mode, str)
        deadline = None if timeout is None else time.monotonic() + timeout

        segment, from_offset, final_values = 0, 0, None
        if isinstance(input, Command) and input.resume is not None:
            handle = self._handle(config)
            state = await self._current_state(handle)
            if state.status != "interrupted":
                raise ValueError(
                    f"thread {handle.id!r} has no pending interrupt to resume "
                    f"(its run is {state.status})"
                )
            segment = state.segment + 1
            from_offset = await WorkflowStreamClient.create(self.client, handle.id).get_offset()
            await handle.signal(RESUME_SIGNAL, input.resume)
            run_id = state.stream_run_id or (await handle.describe()).run_id
        elif input is None:
            handle, run_id, state, closed = await self._join_target(config)
            if closed and "values" in modes:
                # a finished run's final values, if its stream does not carry them
                final_values = state.values if state is not None else await handle.result()
            if state is None:  # closed, and its state can no longer be read
                if final_values is not None:
                    yield ("values", final_values) if multi else final_values
                return
            segment, from_offset = state.segment, state.segment_offset
            run_id = state.stream_run_id or run_id
        else:
            handle = await self.astart(input, config, stream_modes=modes, **kwargs)
            # the Redis stream is named by the first run of the continue-as-new chain
            run_id = handle.first_execution_run_id or handle.result_run_id
        # aclosing at every level: leaving the caller's loop closes the Redis reader and
        # the Temporal poll now, not when the garbage collector finalizes the generators
        run_stream = self._stream_run(handle, run_id, modes, from_offset, segment, deadline)
        async with contextlib.aclosing(run_stream):
            async for mode, chunk in run_stream:
                if mode == "values":
                    final_values = None
                yield (mode, chunk) if multi else chunk
        if final_values is not None:
            yield ("values", final_values) if multi else final_values

    async def _current_state(self, handle: WorkflowHandle) -> RunState:
        try:
            return await handle.query(GET_STATE_QUERY, result_type=RunState)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(f"thread {handle.id!r} has no run") from exc
            raise

    async def _join_target(
        self, config: dict[str, Any] | None
    ) -> tuple[WorkflowHandle, str, RunState | None, bool]:
        """The thread's latest run, its state (None: closed and no longer readable), and
        whether it is closed."""
        handle = self._handle(config)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(
                    f"thread {handle.id!r} has no run to join; pass an input to start one"
                ) from exc
            raise
        # not pinned to a run id: queries and polls follow the run across continue-as-new
        closed = desc.status is not None and desc.status.name != "RUNNING"
        try:
            state: RunState | None = await handle.query(GET_STATE_QUERY, result_type=RunState)
        except (RPCError, WorkflowQueryFailedError):
            if not closed:
                raise
            state = None
        return handle, desc.run_id, state, closed

    async def ajoin(
        self, config: dict[str, Any], *, stream_mode: str | list[str] = "tokens"
    ) -> AsyncIterator[Any]:
        """``astream(None, config)``: join the thread's current run (never starts one)."""
        async for item in self.astream(None, config, stream_mode=stream_mode):
            yield item

    async def _stream_run(
        self,
        handle: WorkflowHandle,
        run_id: str | None,
        modes: list[str],
        from_offset: int,
        segment: int,
        deadline: float | None,
    ) -> AsyncIterator[tuple[str, Any]]:
        topics = [RUN_TOPIC]
        if "values" in modes or "updates" in modes:
            topics.append(GRAPH_TOPIC)
        if "custom" in modes:
            topics.append(CUSTOM_TOPIC)
        want_tokens = "tokens" in modes or "messages" in modes
        if want_tokens:
            topics.append(TOKENS_TOPIC)
        temporal_items = self._reader.items(handle, topics, from_offset, deadline)
        if not want_tokens:
            chunks = graph_events(temporal_items, modes, segment)
            async with contextlib.aclosing(chunks), contextlib.aclosing(temporal_items):
                async for kind, chunk in chunks:
                    yield kind, chunk
            await self._raise_if_failed(handle)
            return
        from deepagent_temporal.client.tokens import merge_token_stream

        events = merge_token_stream(
            temporal_items,
            workflow_id=handle.id,
            run_id=run_id,
            redis_backend=self.redis_stream_backend,
            graph_modes=[m for m in modes if m not in ("tokens", "messages")],
            start_segment=segment,
        )
        async with contextlib.aclosing(events):
            async for kind, chunk in events:
                if kind != "tokens":
                    yield kind, chunk
                    continue
                if "tokens" in modes:
                    yield kind, chunk
                if "messages" in modes and chunk.get("type") in ("token", "snapshot"):
                    yield "messages", _message_chunk(chunk)
        await self._raise_if_failed(handle)

    async def _raise_if_failed(self, handle: WorkflowHandle) -> None:
        desc = await handle.describe()
        status = desc.status.name if desc.status is not None else "RUNNING"
        if status in ("RUNNING", "COMPLETED"):
            return
        try:
            await handle.result()
        except Exception as exc:
            raise RunFailedError(_failure_message(exc)) from exc
        raise RunFailedError(f"run {handle.id} ended with status {status}")


def _message_chunk(ev: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A token event as LangGraph's ``messages`` mode shapes it: (chunk, metadata)."""
    from langchain_core.messages import AIMessageChunk

    chunk = AIMessageChunk(
        content=ev.get("token") or "",
        id=ev.get("message_id"),
        tool_call_chunks=ev.get("tool_call_chunks") or [],
    )
    namespace = list(ev.get("namespace") or [])
    metadata = {
        "langgraph_node": ev.get("node"),
        "langgraph_checkpoint_ns": "|".join(namespace),
        "llm_call": ev.get("llm_call"),
        "attempt": ev.get("attempt"),
        "seq": ev.get("seq"),
        "source": ev.get("source"),
    }
    return chunk, metadata


def _failure_message(exc: BaseException) -> str:
    parts = [str(exc)]
    cause = exc.__cause__
    while cause is not None:
        parts.append(str(cause))
        cause = cause.__cause__
    return ": ".join(p for p in parts if p)
