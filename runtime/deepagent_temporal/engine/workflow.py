"""The Temporal workflow that runs a LangGraph graph (LangGraph's own loop, in the workflow).

One workflow execution is one run of a graph on one thread. LangGraph's Pregel loop
runs inside the workflow (deterministic: routing functions, channel reducers, ``Send``
fan-out, ``Command`` handling), every node runs as an activity (see
:mod:`deepagent_temporal.engine.activity`). State between supersteps is checkpointed in an
in-memory saver that Temporal rebuilds by replay, so an interrupted run simply waits
inside the workflow for :meth:`resume` and continues from the checkpoint.

Everything a client streams is published to the workflow's ``WorkflowStream`` (in
workflow memory; rebuilt by replay, not stored as history events): topic ``graph``
carries ``values`` / ``updates`` chunks and lifecycle markers, topic ``custom`` carries
``get_stream_writer()`` output of nodes, topic ``tokens`` carries the token batches of
the Temporal path published by the activities. Topic and marker names live in
:mod:`deepagent_temporal.contract`.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream, WorkflowStreamState
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command
    from temporalio.langgraph import graph as registered_graph

    from deepagent_temporal.contract import (
        FINISH_STREAM_ACTIVITY,
        GET_STATE_QUERY,
        GRAPH_TOPIC,
        PAUSE_COUNT_QUERY,
        RESUME_SIGNAL,
        RUN_END,
        RUN_ERROR,
        RUN_PAUSE,
        RUN_RESUMED,
        RUN_TOPIC,
        TOKENS_TOPIC,
        WAIT_UPDATE,
        WORKFLOW_NAME,
        RunRequest,
        RunState,
    )
    from deepagent_temporal.payloads import PayloadTooLargeError

#: items of the workflow stream a continued run keeps (for clients that lag behind)
STREAM_TAIL_CARRIED = 512

#: the run's history budget, set by the worker from WorkerEnv before it starts
RUN_LIMITS: dict[str, int] = {"max_history_bytes": 10_000_000, "max_history_events": 10_000}


def history_budget_spent() -> bool:
    """Time to continue as new: Temporal suggests it, or the run's budget is spent."""
    info = workflow.info()
    return (
        info.is_continue_as_new_suggested()
        or info.get_current_history_size() >= RUN_LIMITS["max_history_bytes"]
        or info.get_current_history_length() >= RUN_LIMITS["max_history_events"]
    )


async def checkpoint_to_carry(saver: Any, config: Any) -> dict[str, Any]:
    """The run's latest LangGraph checkpoint, as plain data for the next run's input."""
    tup = await saver.aget_tuple(config)
    return {
        "checkpoint": tup.checkpoint,
        "metadata": tup.metadata,
        "pending_writes": list(tup.pending_writes or []),
    }


async def restore_checkpoint(saver: Any, config: Any, carried: dict[str, Any]) -> None:
    """Put a carried checkpoint (and its pending writes) into a fresh saver."""
    checkpoint = carried["checkpoint"]
    saved = await saver.aput(
        {"configurable": {**config["configurable"], "checkpoint_ns": ""}},
        checkpoint,
        carried["metadata"],
        dict(checkpoint.get("channel_versions") or {}),
    )
    by_task: dict[str, list[tuple[str, Any]]] = {}
    for task_id, channel, value in carried.get("pending_writes") or []:
        by_task.setdefault(task_id, []).append((channel, value))
    for task_id, writes in by_task.items():
        await saver.aput_writes(saved, writes, task_id)


#: compile options per registered graph name (interrupts, name, config), filled by the
#: worker before it starts; read by the workflow (same process).
GRAPH_OPTIONS: dict[str, dict[str, Any]] = {}


def _error_text(exc: BaseException) -> str:
    """``Type: message`` of a failure and its causes (an activity's failure says what
    the activity raised, e.g. a PayloadTooLargeError and how to fix it)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__ or getattr(exc, "cause", None)
    while cause is not None and len(parts) < 5:
        parts.append(f"{getattr(cause, 'type', None) or type(cause).__name__}: {cause}")
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return ": ".join(parts)


def _pick_graph_name(requested: str | None) -> str:
    if requested and requested in GRAPH_OPTIONS:
        return requested
    canonical = {opts.get("canonical", name) for name, opts in GRAPH_OPTIONS.items()}
    if not requested and len(canonical) == 1:
        return next(iter(canonical))
    if requested:
        # let the plugin raise its KeyError listing the available graphs
        return requested
    raise ValueError(f"this worker hosts several graphs {sorted(canonical)}; the run must name one")


@workflow.defn(name=WORKFLOW_NAME, sandboxed=True)
class DeepAgentWorkflow:
    @workflow.init
    def __init__(
        self, request: RunRequest, stream_state: WorkflowStreamState | None = None
    ) -> None:
        # a run that continued as new carries its stream (offsets go on) and its state
        self.stream = WorkflowStream(prior_state=stream_state)
        self._graph_topic = self.stream.topic(GRAPH_TOPIC)
        self._run_topic = self.stream.topic(RUN_TOPIC)
        self._tokens_topic = self.stream.topic(TOKENS_TOPIC)
        carried = request.continuation or {}
        self._state = carried.get("state") or RunState(
            stream_run_id=workflow.info().first_execution_run_id
        )
        self._resume_values: list[Any] = []
        self._pause_count = int(carried.get("pause_count") or 0)
        self._waiters = 0
        #: set right before continue-as-new, which waits for every handler to finish:
        #: pending ``wait`` updates answer (status "running") so the client waits again on
        #: the chain's next run instead of holding this one open
        self._continuing = False

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(
        self, request: RunRequest, stream_state: WorkflowStreamState | None = None
    ) -> Any:
        name = _pick_graph_name(request.graph)
        builder = registered_graph(name)
        opts = GRAPH_OPTIONS.get(name, {})
        compiled = builder.compile(
            checkpointer=InMemorySaver(),
            interrupt_before=opts.get("interrupt_before") or None,
            interrupt_after=opts.get("interrupt_after") or None,
            name=opts.get("name") or "LangGraph",
        )
        base_config = dict(opts.get("config") or {})
        user_config = dict(request.config or {})
        configurable = {
            **(base_config.get("configurable") or {}),
            **(user_config.get("configurable") or {}),
            "thread_id": workflow.info().workflow_id,
        }
        config: dict[str, Any] = {**base_config, **user_config, "configurable": configurable}
        metadata = {**(base_config.get("metadata") or {}), **(user_config.get("metadata") or {})}
        if metadata:
            config["metadata"] = metadata

        publish_modes = {m for m in request.stream_modes if m in ("values", "updates")}
        modes = ["values", *sorted(publish_modes - {"values"})]
        inp = request.input
        continue_as_new = False
        try:
            if request.continuation:
                # the same run, continued as new: resume from the carried checkpoint
                await restore_checkpoint(compiled.checkpointer, config, request.continuation)
                inp = None
            elif request.prior_values:
                # a thread's next run starts from where its previous run ended, as with
                # a persistent LangGraph checkpointer
                await compiled.aupdate_state(config, request.prior_values, as_node="__start__")
            if request.update is not None:
                # a thread's state update: through the reducers, as the node named
                self._state.values = request.prior_values  # kept if the update fails
                values, as_node = request.update.get("values"), request.update.get("as_node")
                await compiled.aupdate_state(config, values, as_node=as_node or "__start__")
                self._state.values = (await compiled.aget_state(config)).values
            while request.update is None:
                stream = compiled.astream(inp, config, stream_mode=modes)
                async for mode, chunk in stream:
                    if mode == "values":
                        self._state.values = chunk
                        self._state.step += 1
                    if mode in publish_modes:
                        self._graph_topic.publish({"kind": mode, "data": chunk})
                    if mode == "values" and history_budget_spent():
                        continue_as_new = True  # at a superstep boundary: checkpointed
                        break
                await stream.aclose()
                if continue_as_new:
                    break
                snapshot = await compiled.aget_state(config)
                self._state.values = snapshot.values
                self._state.next = tuple(snapshot.next)
                self._state.interrupts = tuple(snapshot.interrupts)
                if not snapshot.next:
                    break
                # paused: an interrupt() in a node, or interrupt_before / _after. A pause
                # ends a segment on both paths: Redis gets the segment's `complete`.
                self._state.status = "interrupted"
                self._pause_count += 1
                redis_complete = await self._finish_stream(request)
                self._run_topic.publish(
                    {
                        "kind": RUN_PAUSE,
                        "data": {"interrupts": list(snapshot.interrupts)},
                        "redis_complete": redis_complete,
                        "segment": self.segment,
                    }
                )
                await workflow.wait_condition(lambda: bool(self._resume_values))
                value = self._resume_values.pop(0)
                self._state.status = "running"
                self._state.interrupts = ()
                inp = value if isinstance(value, Command) else Command(resume=value)
                self._state.segment += 1
                # where the new segment starts: the offset query's own value
                self._state.segment_offset = self.stream._on_offset()
                self._run_topic.publish(
                    {"kind": RUN_RESUMED, "data": None, "segment": self.segment}
                )
            if continue_as_new:
                # does not return (ContinueAsNewError is a BaseException); a carried
                # state over the payload limit fails the run here, with the fix named
                await self._continue_as_new(request, compiled, config)
        except Exception as exc:
            if not isinstance(exc, FailureError):
                workflow.logger.exception("graph run failed in the workflow")
            self._state.status = "failed"
            self._state.error = _error_text(exc)
            redis_complete = await self._finish_stream(request)
            self._run_topic.publish(
                {
                    "kind": RUN_ERROR,
                    "data": self._state.error,
                    "redis_complete": redis_complete,
                    "segment": self.segment,
                }
            )
            await self._drain_handlers()
            if isinstance(exc, FailureError):
                raise
            # a plain exception would only fail the workflow *task* (retried forever);
            # a graph error (bad routing, recursion limit, ...) fails the run instead.
            raise ApplicationError(
                self._state.error, type=type(exc).__name__, non_retryable=True
            ) from exc
        self._state.status = "completed"
        self._state.next = ()
        redis_complete = await self._finish_stream(request)
        self._run_topic.publish(
            {
                "kind": RUN_END,
                "data": None,
                "redis_complete": redis_complete,
                "segment": self.segment,
            }
        )
        await self._drain_handlers()
        return self._state.values

    async def _continue_as_new(self, request: RunRequest, compiled: Any, config: Any) -> None:
        """Carry the run into a fresh Event History: same workflow id, same streams."""
        carried = await checkpoint_to_carry(compiled.checkpointer, config)
        self._state.continuations += 1
        carried["state"] = self._state
        carried["pause_count"] = self._pause_count
        next_request = dataclasses.replace(request, input=None, continuation=carried)
        self._continuing = True
        # keep the tail of the stream a lagging client may still need; older items go
        offset = self.stream._on_offset()
        keep_from = max(offset - STREAM_TAIL_CARRIED, self._state.segment_offset, 0)
        if keep_from > self.stream._base_offset:
            self.stream.truncate(keep_from)
        converter = workflow.payload_converter()
        ours = getattr(converter, "_inner_payload_converter", converter)  # the SDK wraps it
        if getattr(ours, "size_limit", None):
            # no payload storage: the SDK would fail to encode an input over Temporal's
            # limit after the run is gone (a stuck workflow); the converter raises
            # PayloadTooLargeError here instead, and the run fails naming the fix
            try:
                converter.to_payloads([next_request, self.stream.get_state()])
            except PayloadTooLargeError as exc:
                what = "the continued run's input (checkpoint, state and stream tail)"
                raise PayloadTooLargeError(exc.size, exc.limit, what) from None
        await self.stream.continue_as_new(lambda state: [next_request, state])

    async def _finish_stream(self, request: RunRequest) -> bool:
        """Token streaming runs end with a ``complete`` entry in Redis (if the worker has it).

        Returns whether Redis got it: then a client has all Redis-carried tokens of the run
        once it reads that entry (a stream is FIFO).
        """
        if "tokens" not in request.stream_modes:
            return False
        try:
            return await workflow.execute_activity(
                FINISH_STREAM_ACTIVITY,
                args=[self.segment, self._state.stream_run_id],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary="finish token stream",
            )
        except Exception:  # best effort: the client ends the stream from Temporal anyway
            workflow.logger.warning("could not write the end of the token stream")
            return False

    @property
    def stream_run_id(self) -> str | None:
        """The run id that names the run's Redis stream (the first of its chain)."""
        return self._state.stream_run_id

    @property
    def segment(self) -> int:
        """Resumes so far; node activities stamp their token events with it."""
        return self._state.segment

    def record_llm_calls(self, records: list[dict[str, Any]]) -> None:
        """Publish the durable record of each LLM call of a completed node activity."""
        if records:
            self._tokens_topic.publish([{**r, "segment": self.segment} for r in records])

    async def _drain_handlers(self) -> None:
        """Release stream long-polls and let ``wait`` updates answer before closing."""
        self.stream.detach_pollers()
        try:
            await workflow.wait_condition(
                lambda: self._waiters == 0 and workflow.all_handlers_finished(),
                timeout=timedelta(seconds=5),
            )
        except TimeoutError:
            pass

    # -------------------------------------------------------------- handlers

    @workflow.query(name=GET_STATE_QUERY)
    def get_state(self) -> RunState:
        return self._state

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self, value: Any) -> None:
        self._resume_values.append(value)

    @workflow.update(name=WAIT_UPDATE)
    async def wait(self, after_pauses: int) -> RunState:
        """Return once the run is paused (more than ``after_pauses`` times) or done, or
        (status "running") when it continues as new: then ask the chain's next run."""
        self._waiters += 1
        try:
            await workflow.wait_condition(
                lambda: (
                    self._continuing
                    or self._state.status in ("completed", "failed")
                    or (self._state.status == "interrupted" and self._pause_count > after_pauses)
                )
            )
        finally:
            self._waiters -= 1
        return self._state

    @workflow.query(name=PAUSE_COUNT_QUERY)
    def pause_count(self) -> int:
        return self._pause_count
