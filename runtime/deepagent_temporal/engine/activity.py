"""Graph nodes as Temporal activities, and token capture injected into them.

Workflow side: :func:`make_node_caller` replaces a node's function with a coroutine that
runs the node as an activity (``workflow.execute_activity``), passing the node's state,
and the serializable part of the LangGraph config.

Activity side: :func:`make_node_activity` restores LangGraph's config (scratchpad,
resume values for ``interrupt()``, runtime context) and calls the user's function,
sync or async, unchanged. Whatever it returns (a state update, a ``Command``, a list
of ``Command``s) travels back through :mod:`deepagent_temporal.converter`.

Token capture is done by :class:`TokenStreamingInterceptor`, a worker activity
interceptor: for each node activity it creates a
:class:`~deepagent_temporal.capture.TokenCapturingHandler` for the run context (workflow id, run id, node, attempt) and
makes every chat-model call inside the activity see it through langchain-core's
``register_configure_hook`` (a ContextVar, so nested sub-agents and middleware that
make several calls are covered, and concurrent activities never mix). Token batches of
the Temporal path go to the workflow's ``WorkflowStream`` (topic ``tokens``) while the LLM call runs;
before the activity returns, the handler is flushed and only its per-LLM-call summary
stays in the activity result.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from langgraph.errors import GraphInterrupt
from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    FINISH_STREAM_ACTIVITY,
    LLM_RECORD,
    TOKENS_TOPIC,
    WorkerEnv,
    content_text,
)
from deepagent_temporal.engine import attempts, node_config
from deepagent_temporal.transport.temporal import compact

logger = logging.getLogger(__name__)

#: attribute set on node activity functions so the interceptor recognises them
NODE_ACTIVITY_ATTR = "__deepagent_node__"


@dataclass
class NodeActivityInput:
    """What a node activity receives: the node's positional/keyword args and config."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    langgraph_config: dict[str, Any]
    node: str = ""
    namespace: tuple[str, ...] = ()
    #: the run's segment (resumes so far): token events carry it
    segment: int = 0
    #: the node's maximum_attempts (0: none), enforced in the activity (engine/attempts.py)
    max_attempts: int = 0
    #: the run id naming the run's Redis stream (the first run of a continue-as-new chain)
    stream_run_id: str | None = None
    #: the workflow stream's length when the node was scheduled (stamped on ``llm_start``)
    stream_offset: int | None = None


@dataclass
class NodeActivityOutput:
    """What a node activity returns (kept in Event History)."""

    result: Any = None
    interrupts: Any = None
    #: per-LLM-call summaries from the token handler (``{"token_count": N, ...}``)
    token_summary: list[dict[str, Any]] | None = None


# --------------------------------------------------------------------------- context


@dataclass
class ActivityStreamContext:
    """Per-activity streaming state, set by the interceptor, read by the node wrapper."""

    custom_writer: Callable[[Any], None] | None = None
    handler: Any = None


_stream_ctx: contextvars.ContextVar[ActivityStreamContext | None] = contextvars.ContextVar(
    "deepagent_activity_stream_ctx", default=None
)

#: the ContextVar langchain-core's configure hook reads: every callback manager created
#: while it holds a handler gets that handler (inheritable: child runs see it too).
token_handler_var: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "deepagent_token_handler", default=None
)
_hook_registered = False


def _ensure_configure_hook() -> None:
    global _hook_registered
    if _hook_registered:
        return
    from langchain_core.tracers.context import register_configure_hook

    register_configure_hook(token_handler_var, inheritable=True)
    _hook_registered = True


# --------------------------------------------------------------------- activity side


def make_node_activity(
    activity_name: str, func: Callable[..., Any]
) -> Callable[[NodeActivityInput], Awaitable[NodeActivityOutput]]:
    """Build the activity function that runs one graph node."""
    try:
        accepts_runtime = "runtime" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        accepts_runtime = False
    is_async = inspect.iscoroutinefunction(func)

    async def node_activity(input: NodeActivityInput) -> NodeActivityOutput:
        ctx = _stream_ctx.get()
        writer = ctx.custom_writer if ctx is not None else None
        if writer is not None and not is_async:
            loop = asyncio.get_running_loop()
            inner = writer

            def writer(value: Any) -> None:  # noqa: F811 - thread-safe variant
                loop.call_soon_threadsafe(inner, value)

        runtime = node_config.restore(input.langgraph_config, stream_writer=writer)
        kwargs = dict(input.kwargs)
        if accepts_runtime:
            kwargs["runtime"] = runtime
        try:
            if is_async:
                result = await func(*input.args, **kwargs)
            else:
                result = await asyncio.to_thread(func, *input.args, **kwargs)
        except GraphInterrupt as exc:
            return NodeActivityOutput(interrupts=exc.args[0])
        return NodeActivityOutput(result=result)

    node_activity.__name__ = activity_name.replace(".", "_")
    setattr(node_activity, NODE_ACTIVITY_ATTR, activity_name)
    return activity.defn(name=activity_name)(node_activity)


# --------------------------------------------------------------------- workflow side


def make_node_caller(
    activity_fn: Callable[..., Any], node_name: str, options: dict[str, Any]
) -> Callable[..., Awaitable[Any]]:
    """Build the coroutine LangGraph calls (in the workflow) in place of the node."""

    async def call_node(*args: Any, **kwargs: Any) -> Any:
        if "config" in kwargs:
            kwargs["config"] = node_config.for_activity(kwargs["config"])
        kwargs.pop("runtime", None)  # rebuilt in the activity
        lg_config = node_config.langgraph_config()
        ns = lg_config.get("configurable", {}).get("checkpoint_ns", "") or ""
        # the path of the (sub)graph this node belongs to; LangGraph's convention
        namespace = tuple(p for p in ns.split("|") if p)[:-1]
        opts, max_attempts = attempts.unlimited_retries(dict(options))
        opts.setdefault("summary", node_name)
        run = workflow.instance()
        out: NodeActivityOutput = await workflow.execute_activity(
            activity_fn,
            NodeActivityInput(
                args=args,
                kwargs=kwargs,
                langgraph_config=lg_config,
                node=node_name,
                namespace=namespace,
                segment=getattr(run, "segment", 0),
                max_attempts=max_attempts,
                stream_run_id=getattr(run, "stream_run_id", None),
                stream_offset=run.stream._on_offset() if hasattr(run, "stream") else None,
            ),
            **opts,
        )
        record_calls = getattr(run, "record_llm_calls", None)
        if out.token_summary and record_calls is not None:
            record_calls(llm_records(out))
        if out.interrupts is not None:
            raise GraphInterrupt(out.interrupts)
        return out.result

    return call_node


def message_text(value: Any, message_id: str | None, _depth: int = 0) -> str | None:
    """The text of the message with ``message_id`` inside a node's result, if any."""
    if message_id is None or _depth > 8:
        return None
    if getattr(value, "id", None) == message_id and hasattr(value, "content"):
        return content_text(value.content)
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list | tuple):
        children = value
    elif hasattr(value, "update") and hasattr(value, "goto"):  # a Command
        children = [value.update]
    else:
        return None
    for child in children:
        found = message_text(child, message_id, _depth + 1)
        if found is not None:
            return found
    return None


def llm_records(out: NodeActivityOutput) -> list[dict[str, Any]]:
    """The durable record of each LLM call of a completed node activity (see
    ``contract.LLM_RECORD``): its summary, with the text taken from the result if needed."""
    records = []
    for summary in out.token_summary or []:
        record = {k: v for k, v in summary.items() if k != "text_in_result"}
        if summary.get("text_in_result"):
            record["text"] = message_text(out.result, summary.get("message_id"))
        record["type"] = LLM_RECORD
        records.append(record)
    return records


# ------------------------------------------------------------ token capture injection


def stream_task_id(info: Any, node_input: Any) -> str:
    """The task's id in token events: unique in the run's stream. Activity ids restart
    at every continue-as-new, so later runs of a chain prefix theirs with the run id."""
    stream_run_id = getattr(node_input, "stream_run_id", None)
    if stream_run_id is None or stream_run_id == info.workflow_run_id:
        return info.activity_id
    return f"{info.workflow_run_id}/{info.activity_id}"


def _temporal_batch_interval() -> timedelta:
    return timedelta(milliseconds=max(WorkerEnv.from_env().temporal_batch_ms, 1.0))


def _metric(cls: Any, name: str, doc: str, **kwargs: Any) -> Any:
    from prometheus_client import REGISTRY

    existing = getattr(REGISTRY, "_names_to_collectors", {})
    for candidate in (name, f"{name}_total"):
        if candidate in existing:
            return existing[candidate]
    return cls(name, doc, **kwargs)


def _activity_metrics() -> tuple[Any, Any]:
    from prometheus_client import Counter, Histogram

    count = _metric(
        Counter,
        "deepagent_node_activities",
        "Graph node activities executed by this worker, by node and outcome.",
        labelnames=("node", "outcome"),
    )
    seconds = _metric(
        Histogram,
        "deepagent_node_activity_seconds",
        "Duration of graph node activity attempts.",
        labelnames=("node",),
    )
    return count, seconds


class _NodeActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: TokenStreamingInterceptor):
        super().__init__(next)
        self._owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        node_name = getattr(input.fn, NODE_ACTIVITY_ATTR, None)
        if node_name is None:
            return await self.next.execute_activity(input)
        info = activity.info()
        if info.workflow_id is None:
            return await self.next.execute_activity(input)
        count, seconds = _activity_metrics()
        node_input = input.args[0] if input.args else None
        node = getattr(node_input, "node", "") or node_name
        started = time.perf_counter()
        outcome = "failed"
        try:
            run = self._owner.run_node_activity(self.next, input)
            budget = getattr(node_input, "max_attempts", 0)
            result = await attempts.run_attempt(run, node, budget)
            outcome = (
                "interrupted"
                if isinstance(result, NodeActivityOutput) and result.interrupts is not None
                else "completed"
            )
            return result
        except Exception as exc:
            if attempts.is_worker_shutdown(exc):
                outcome = "worker_shutdown"
            raise
        finally:
            count.labels(node=node, outcome=outcome).inc()
            seconds.labels(node=node).observe(time.perf_counter() - started)


class TokenStreamingInterceptor(Interceptor):
    """Worker interceptor: streams custom events and LLM tokens out of node activities."""

    def __init__(
        self,
        enable_token_streaming: bool = True,
        redis_stream_backend: Any = None,
        temporal_batch_interval: timedelta | None = None,
    ) -> None:
        self.enable_token_streaming = enable_token_streaming
        self.redis_stream_backend = redis_stream_backend
        self.temporal_batch_interval = temporal_batch_interval or _temporal_batch_interval()
        if enable_token_streaming:
            _ensure_configure_hook()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _NodeActivityInbound(next, self)

    def _make_handler(self, input: ExecuteActivityInput, publish: Callable[..., Any]) -> Any:
        from deepagent_temporal.capture.handler import TokenCapturingHandler

        info = activity.info()
        node_input = input.args[0] if input.args else None
        node = getattr(node_input, "node", "") or info.activity_type.split(".", 1)[-1]
        namespace = list(getattr(node_input, "namespace", ()) or ())
        return TokenCapturingHandler(
            workflow_id=info.workflow_id,
            run_id=getattr(node_input, "stream_run_id", None) or info.workflow_run_id,
            node=node,
            namespace=namespace,
            task_id=stream_task_id(info, node_input),
            attempt=info.attempt,
            segment=getattr(node_input, "segment", 0),
            stream_offset=getattr(node_input, "stream_offset", None),
            redis=self.redis_stream_backend,
            temporal_publish=publish,
            temporal_batch_interval=self.temporal_batch_interval.total_seconds(),
        )

    async def run_node_activity(
        self, next: ActivityInboundInterceptor, input: ExecuteActivityInput
    ) -> Any:
        from temporalio.contrib.workflow_streams import WorkflowStreamClient

        stream = WorkflowStreamClient.from_within_activity(
            batch_interval=self.temporal_batch_interval
        )
        tokens_topic = stream.topic(TOKENS_TOPIC)
        custom_topic = stream.topic(CUSTOM_TOPIC)

        async def temporal_publish(events: list[dict[str, Any]]) -> None:
            # one stream item and one signal per batch; the handler batches (every
            # WorkerEnv.temporal_batch_ms) while the previous signal is in flight
            if events:
                tokens_topic.publish(compact(list(events)), force_flush=True)
                await stream.flush()

        summaries: list[dict[str, Any]] | None = None
        heartbeat = asyncio.create_task(_heartbeat_loop())
        try:
            async with stream:
                ctx = ActivityStreamContext(custom_writer=custom_topic.publish)
                handler = None
                if self.enable_token_streaming:
                    handler = self._make_handler(input, temporal_publish)
                    ctx.handler = handler
                ctx_token = _stream_ctx.set(ctx)
                handler_token = token_handler_var.set(handler) if handler is not None else None
                try:
                    try:
                        result = await next.execute_activity(input)
                    finally:
                        if handler is not None:
                            summaries = await handler.flush()
                finally:
                    if handler_token is not None:
                        token_handler_var.reset(handler_token)
                    _stream_ctx.reset(ctx_token)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await heartbeat
        if summaries and isinstance(result, NodeActivityOutput):
            task_id = stream_task_id(activity.info(), input.args[0] if input.args else None)
            summaries = [{**s, "task_id": task_id} for s in summaries]
            for summary in summaries:
                # the text is in the result already (a model node's AIMessage): do not
                # store it twice in history; the workflow takes it from the result
                if "text" in summary and (
                    message_text(result.result, summary.get("message_id")) == summary["text"]
                ):
                    summary["text_in_result"] = True
                    del summary["text"]
            result = dataclasses.replace(result, token_summary=summaries)
        return result


async def _heartbeat_loop() -> None:
    """Heartbeat while the node runs, so a crashed worker's attempt is retried quickly."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return
    interval = max(timeout.total_seconds() / 3, 0.2)
    details = attempts.heartbeat_details()  # a heartbeat replaces earlier details
    while True:
        activity.heartbeat(details)
        await asyncio.sleep(interval)


async def finish_stream_activity_impl(
    backend: Any, segment: int = 0, stream_run_id: str | None = None
) -> bool:
    """End of a run segment (the run ends or pauses): write the Redis ``complete`` entry
    (and re-send what Redis lost through the Temporal path)."""
    if backend is None:
        return False
    from temporalio.contrib.workflow_streams import WorkflowStreamClient

    info = activity.info()
    stream = WorkflowStreamClient.from_within_activity(batch_interval=timedelta(milliseconds=20))
    topic = stream.topic(TOKENS_TOPIC)

    async def temporal_publish(events: list[dict[str, Any]]) -> None:
        if events:
            topic.publish(compact(list(events)))

    async with stream:
        return await backend.publish_complete(
            info.workflow_id,
            stream_run_id or info.workflow_run_id,
            temporal_publish=temporal_publish,
            extra={"segment": segment} if segment else None,
        )


def make_finish_stream_activity(backend: Any) -> Callable[..., Awaitable[bool]]:
    async def finish_stream(segment: int = 0, stream_run_id: str | None = None) -> bool:
        return await finish_stream_activity_impl(backend, segment, stream_run_id)

    return activity.defn(name=FINISH_STREAM_ACTIVITY)(finish_stream)


# ------------------------------------------------------------------ seed-style API


class StreamingNodeWrapper:
    """Seed-compatible name for node-level token capture.

    Token capture is injected by :class:`TokenStreamingInterceptor` for every node
    activity (no wrapping of the user's nodes is needed); this wrapper marks a node
    runnable as streamed and otherwise delegates to it unchanged.
    """

    def __init__(self, bound: Any, node_name: str = "") -> None:
        self.bound = bound
        self.node_name = node_name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bound, name)

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        return self.bound.invoke(*args, **kwargs)

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        return await self.bound.ainvoke(*args, **kwargs)


def wrap_graph_for_streaming(graph: Any) -> Any:
    """Seed-compatible: returns ``graph`` unchanged.

    Token capture happens in the worker's activity interceptor, so compiled graphs run
    as they are; this function exists so code written against the seed API keeps
    working.
    """
    return graph
