"""Capture: the LangChain callback handler that turns chat-model streaming into events.

One handler per node activity attempt, created inside the activity's event loop::

    handler = TokenCapturingHandler(
        workflow_id=info.workflow_id, run_id=info.workflow_run_id,
        node="model", namespace=["tools:..."],  # graph node + subgraph path of the task
        task_id=info.activity_id,               # stable across attempts: `reset` scope
        attempt=info.attempt,                   # >1 emits a `reset` for attempt-1 first
        redis=backend,                          # None: the Temporal path only
        temporal_publish=async_fn,              # async (events) -> None, or None
    )
    result = await node.ainvoke(state, {"callbacks": [handler]})
    summaries = await handler.flush()           # ALWAYS await before returning

Why it is built this way:

- It is a langchain-core ``_StreamingCallbackHandler`` (``tap_output_aiter`` /
  ``tap_output_iter``): only then does ``BaseChatModel.ainvoke`` / ``invoke`` switch to
  ``_astream`` / ``_stream`` and fire ``on_llm_new_token``. A plain handler sees no tokens.
- ``run_inline = True`` and the callbacks never block: they build the event and hand it
  to the loop, directly on the loop thread, with ``call_soon_threadsafe`` from executor
  threads (sync nodes). Publishing from the executor thread itself dropped tokens.
- Routing is per LLM call: at ``llm_start`` the call takes the Redis path if the circuit
  is closed, else the Temporal path. If a Redis write fails mid-call, the call moves to
  the Temporal path and what Redis may have lost (the writer's replay window, this
  call's unsettled events included) is re-sent there first. Clients de-duplicate, so
  every token is delivered once.
- Without ``temporal_publish`` the Temporal path's events collect in
  ``handler.temporal_events`` (returned with the activity result).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers._streaming import _StreamingCallbackHandler

from deepagent_temporal import metrics
from deepagent_temporal.capture.calls import LLMCall, graph_namespace
from deepagent_temporal.contract import REDIS, TEMPORAL, content_text
from deepagent_temporal.transport.redis_writer import RedisStreamBackend
from deepagent_temporal.transport.temporal import TemporalBatcher, TemporalPublish, count_tokens

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TokenCapturingHandler(BaseCallbackHandler, _StreamingCallbackHandler):
    """LangChain callback handler that turns chat-model streaming into token events.

    Callbacks run inline and are cheap; transport work happens in tasks on the event
    loop the handler was created in. See the module docstring for the API.
    """

    run_inline = True
    raise_error = False

    def __init__(
        self,
        *,
        workflow_id: str = "local",
        run_id: str = "local",
        node: str | None = None,
        namespace: Sequence[str] = (),
        task_id: str | None = None,
        attempt: int = 1,
        segment: int = 0,
        stream_offset: int | None = None,
        redis: RedisStreamBackend | None = None,
        temporal_publish: TemporalPublish | None = None,
        temporal_batch_interval: float = 0.05,
        temporal_max_batch: int = 256,
        temporal_retries: int = 5,
        emit_reset: bool = True,
        flush_timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.node = node
        self.namespace = list(namespace)
        self.task_id = task_id if task_id is not None else (node or "task")
        self.attempt = int(attempt)
        self.segment = int(segment)
        self.stream_offset = stream_offset
        self.redis = redis
        self.flush_timeout = flush_timeout
        self._sink = sink  # test hook: receives every event on the loop thread, in order
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None:
            loop = running
        self._loop = loop
        # the thread that runs the loop: callbacks from any other thread are handed over
        self._loop_thread: int | None = (
            threading.get_ident()
            if loop is not None and loop is running
            else getattr(loop, "_thread_id", None)
        )
        self._counter = itertools.count()
        self._calls: dict[UUID, LLMCall] = {}
        self._all_calls: list[LLMCall] = []
        self._calls_lock = threading.Lock()
        self._ended: list[LLMCall] = []  # in end order; summaries are built from them
        self._counted = 0  # ended calls already counted in metrics
        self._redis_pending = 0
        self._redis_idle = asyncio.Event() if loop is not None else None
        if self._redis_idle is not None:
            self._redis_idle.set()
        self._batcher = (
            TemporalBatcher(
                temporal_publish,
                loop,
                interval=temporal_batch_interval,
                max_batch=temporal_max_batch,
                retries=temporal_retries,
            )
            if temporal_publish is not None and loop is not None
            else None
        )
        self.temporal_events: list[dict[str, Any]] = []  # without temporal_publish
        self._temporal_counted = 0
        self.events_emitted = 0
        if redis is not None and loop is not None and self._loop_thread is not None:
            with contextlib.suppress(RuntimeError):
                redis.bind_loop()  # the writer runs on this (the activity's) loop
        if emit_reset and self.attempt > 1:
            reset = {
                "type": "reset",
                "token": "",
                "node": node,
                "namespace": list(self.namespace),
                "task_id": self.task_id,
                "attempt": self.attempt - 1,
                "next_attempt": self.attempt,
                "ts": time.time(),
            }
            if self.segment:
                reset["segment"] = self.segment
            self._submit(None, reset)

    # -- streaming-callback protocol (makes BaseChatModel stream under ainvoke) ---------

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[T]) -> AsyncIterator[T]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[T]) -> Iterator[T]:
        return output

    # -- LangChain callbacks (sync, inline, non-blocking) -------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_call(run_id, tags, metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_call(run_id, tags, metadata)

    def _start_call(
        self, run_id: UUID, tags: list[str] | None, metadata: dict[str, Any] | None
    ) -> None:
        node, namespace = self.node, self.namespace
        ns = graph_namespace(metadata)
        if ns and len(ns) > len(self.namespace):
            # A nested subgraph / sub-agent call inside this task.
            namespace = list(self.namespace) + list(ns[len(self.namespace) :])
            node = (metadata or {}).get("langgraph_node", node)
        elif node is None and metadata:
            node = metadata.get("langgraph_node")
        call = LLMCall(
            llm_call=next(self._counter),
            node=node,
            namespace=namespace,
            nostream=bool(tags and "nostream" in tags),
        )
        call.on_settled = functools.partial(self._redis_settled, call)
        with self._calls_lock:
            self._calls[run_id] = call
            self._all_calls.append(call)
        start = self._base(call, "llm_start")
        if self.stream_offset is not None:
            start["stream_offset"] = self.stream_offset
        self._submit(call, start)

    def on_llm_new_token(
        self,
        token: Any,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        call = self._calls.get(run_id)
        if call is None:
            return
        tool_call_chunks = None
        message = chunk.message if chunk is not None else None
        if message is not None:
            content = message.content
            text = content if type(content) is str else content_text(content)
            tcc = getattr(message, "tool_call_chunks", None)
            if tcc:
                tool_call_chunks = [dict(c) for c in tcc]
            if call.message_id is None:
                call.message_id = message.id
        else:
            text = token if type(token) is str else content_text(token)
        if not text and not tool_call_chunks:
            return  # e.g. the final empty chunk with chunk_position="last"
        if call.message_id is None:
            call.message_id = f"lc_run--{run_id}"
        ev = {
            "type": "token",
            "token": text,
            "node": call.node,
            "namespace": call.namespace,
            "task_id": self.task_id,
            "llm_call": call.llm_call,
            "index": call.index,
            "attempt": self.attempt,
            "message_id": call.message_id,
            "ts": time.time(),
        }
        if tool_call_chunks:
            ev["tool_call_chunks"] = tool_call_chunks
        if getattr(message, "chunk_position", None) == "last":
            ev["chunk_position"] = "last"
        if call.nostream:
            ev["nostream"] = True
        if self.segment:
            ev["segment"] = self.segment
        call.index += 1
        call.text.append(text)
        if self._loop_thread == threading.get_ident():
            self._dispatch(call, ev, False)
        else:
            self._submit(call, ev)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_call(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_call(run_id, repr(error)[:500])

    def _end_call(self, run_id: UUID, error: str | None) -> None:
        with self._calls_lock:
            call = self._calls.pop(run_id, None)
        if call is None:
            return
        ev = self._base(call, "llm_end")
        ev["token_count"] = call.index
        ev["message_id"] = call.message_id
        if error:
            ev["error"] = error
        self._submit(call, ev, end=True)

    def _base(self, call: LLMCall, type_: str) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "type": type_,
            "token": "",
            "node": call.node,
            "namespace": call.namespace,
            "task_id": self.task_id,
            "llm_call": call.llm_call,
            "attempt": self.attempt,
            "message_id": call.message_id,
            "ts": time.time(),
        }
        if call.nostream:
            ev["nostream"] = True
        if self.segment:
            ev["segment"] = self.segment
        return ev

    # -- hand-off to the loop and routing -------------------------------------------------

    def _submit(self, call: LLMCall | None, ev: dict[str, Any], end: bool = False) -> None:
        loop = self._loop
        if loop is None:  # no event loop at all: keep events for the activity result
            ev["source"] = TEMPORAL
            self.temporal_events.append(ev)
            self.events_emitted += 1
            return
        if threading.get_ident() == self._loop_thread:
            self._dispatch(call, ev, end)
        else:
            loop.call_soon_threadsafe(self._dispatch, call, ev, end)

    def _dispatch(self, call: LLMCall | None, ev: dict[str, Any], end: bool) -> None:
        """Runs on the loop thread: route one event (in emit order)."""
        self.events_emitted += 1
        if self._sink is not None:
            self._sink(ev)
        if call is None:  # a control event (reset): its own pseudo call
            call = LLMCall(llm_call=-1, node=self.node, namespace=self.namespace)
            call.on_settled = functools.partial(self._redis_settled, call)
            self._all_calls.append(call)
            call.route = REDIS if self._redis_available() else TEMPORAL
            if call.route == TEMPORAL:
                self._replay_lost(stale_only=True)
        elif ev["type"] == "llm_start":
            if self._redis_available():
                call.route = REDIS
            else:
                call.route = TEMPORAL
                if self.redis is not None:
                    metrics.FAILOVERS.labels(reason="circuit_open").inc()
            self._replay_lost(stale_only=True)
        if call.route == REDIS:
            redis = self.redis
            assert redis is not None
            if not redis.available():
                self._failover(call, "circuit_open")
            else:
                ev["source"] = REDIS
                call.used_redis = True
                call.pending += 1
                self._redis_pending += 1
                assert self._redis_idle is not None
                self._redis_idle.clear()
                redis.enqueue(self.workflow_id, self.run_id, ev, call.on_settled)
        if call.route == TEMPORAL:
            ev["source"] = TEMPORAL
            self._to_temporal([ev])
        if end:
            call.ended = True
            call.error = ev.get("error")
            self._ended.append(call)

    def _redis_available(self) -> bool:
        return self.redis is not None and self.redis.available()

    def _redis_settled(self, call: LLMCall, count: int, ok: bool) -> None:
        """The writer's verdict on ``count`` events of ``call`` (on the loop thread)."""
        call.pending -= count
        if not ok:
            self._failover(call, "redis_error")
        self._redis_pending -= count
        if self._redis_pending <= 0 and self._redis_idle is not None:
            self._redis_pending = 0
            self._redis_idle.set()

    def _failover(self, call: LLMCall, reason: str) -> None:
        """Move a Redis-routed call to the Temporal path, replaying what Redis may have lost."""
        if call.route != REDIS:
            return
        call.route = TEMPORAL
        call.failed_over = True
        metrics.FAILOVERS.labels(reason=reason).inc()
        logger.warning(
            "token stream %s/%s: Redis unavailable (%s); LLM call %s of %s continues via Temporal",
            self.workflow_id,
            self.run_id,
            reason,
            call.llm_call,
            self.node,
        )
        self._replay_lost(stale_only=False)

    def _replay_lost(self, *, stale_only: bool) -> None:
        if self.redis is None:
            return
        events = self.redis.take_replay(self.workflow_id, self.run_id, stale_only=stale_only)
        if events:
            metrics.EVENTS_REPLAYED.inc(len(events))
            self._to_temporal([{**e, "source": TEMPORAL, "replay": True} for e in events])

    def _to_temporal(self, events: list[dict[str, Any]]) -> None:
        if self._batcher is None:
            self.temporal_events.extend(events)
        else:
            self._batcher.add(events)

    # -- end of the activity -------------------------------------------------------------

    async def flush(self) -> list[dict[str, Any]]:
        """Deliver everything (Redis acknowledged or sent through Temporal); return summaries.

        Await this before the activity returns. Raises
        :class:`~deepagent_temporal.transport.temporal.TemporalPublishError` if the
        Temporal path failed for good (the activity should fail and be retried).
        """
        await asyncio.sleep(0)  # run callbacks queued from executor threads
        if self.redis is not None and self._redis_idle is not None and self._redis_pending:
            timeout = self.flush_timeout or (self.redis.op_timeout * 2 + 1.0)
            try:
                await asyncio.wait_for(self._redis_idle.wait(), timeout)
            except TimeoutError:
                for call in list(self._all_calls):
                    if call.pending:
                        self._failover(call, "flush_timeout")
        if self._batcher is not None:
            await self._batcher.flush()
        else:
            count_tokens(self.temporal_events[self._temporal_counted :])
            self._temporal_counted = len(self.temporal_events)
        for call in self._ended[self._counted :]:
            metrics.LLM_CALLS.labels(transport=call.transport).inc()
        self._counted = len(self._ended)
        return self.summaries

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """One small dict per ended LLM call (what Event History keeps)."""
        return [call.summary(self.attempt) for call in self._ended]

    def summary(self) -> dict[str, Any]:
        """Compact activity-level summary for Event History."""
        summaries = self.summaries
        transports = {s["transport"] for s in summaries}
        return {
            "llm_calls": summaries,
            "token_count": sum(s["token_count"] for s in summaries),
            "transport": transports.pop()
            if len(transports) == 1
            else ("mixed" if transports else None),
        }


__all__ = ["TokenCapturingHandler"]
