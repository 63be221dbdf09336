"""Token streaming: capture (LangChain callback), transport (Redis / Temporal), failover.

Interface summary (for the Temporal side, ``activity.py`` / ``agent.py``)
=======================================================================

Worker side, one handler per activity attempt, created inside the activity's event loop::

    backend = RedisStreamBackend(redis_url, maxlen=10000, ttl_seconds=3600)  # one per process
    handler = TokenCapturingHandler(
        workflow_id=info.workflow_id, run_id=info.workflow_run_id,
        node="model", namespace=["tools:..."],      # graph node + subgraph path of the task
        task_id=info.activity_id,                   # stable across attempts: `reset` scope
        attempt=info.attempt,                       # >1 emits a `reset` for attempt-1 first
        redis=backend,                              # None = Phase 1 only
        phase1_publish=async_fn,                    # async (events: list[dict]) -> None, or None
    )
    config["callbacks"] = [..., handler]            # or CallbackManager.add_handler(handler)
    result = await node.ainvoke(state, config)
    summaries = await handler.flush()               # ALWAYS await before returning
    # summaries: [{"token_count", "llm_call", "message_id", "transport", "attempt", ...}]
    # handler.phase1_events: events routed to Phase 1 when phase1_publish is None
    #   (return them with the activity result; the workflow feeds them to the stream buffer)

- The handler is a ``langchain_core`` ``_StreamingCallbackHandler`` (``tap_output_aiter`` /
  ``tap_output_iter``) so ``BaseChatModel.ainvoke``/``invoke`` switch to ``_astream``/``_stream``
  and fire ``on_llm_new_token``; ``run_inline = True``; its callbacks are plain (sync) methods
  that never block: they build the event and hand it to the loop (directly on the loop thread,
  ``loop.call_soon_threadsafe`` from executor threads, i.e. sync nodes).
- Routing is per LLM call: at ``llm_start`` the call goes to Redis (Phase 2) if the circuit is
  closed, else to Phase 1. If a Redis write fails mid-call, the circuit opens and everything of
  this run that Redis may have lost (a replay window of events written to Redis, including this
  call's un-acknowledged events) is re-sent through ``phase1_publish`` followed by the rest of the
  call. Clients de-duplicate, so every token is delivered exactly once (see TokenStreamMerger).
- Phase 1 batching: ``phase1_publish`` is called with batches (every ``phase1_interval``
  seconds, default 0.05, or ``phase1_max_batch`` events), one call in flight at a time, in
  order, with retries; ``flush()`` raises if Phase 1 ultimately fails (the activity should
  fail and be retried). If the sink batches by itself (a workflow-stream topic), pass
  ``phase1_interval=0`` to avoid adding a second batching delay.
- Summaries: ``flush()`` returns (and ``handler.summaries`` holds) one dict per LLM call,
  ``{"token_count", "llm_call", "message_id", "transport": "redis"|"temporal", "node",
  "attempt", ["failover", "namespace", "error"]}`` - about 150 bytes; ``handler.summary()``
  aggregates them per activity.
- End of run: ``await backend.publish_complete(workflow_id, run_id, phase1_publish=...)`` writes
  the ``complete`` entry (returns False if Redis is down; the Temporal side ends the stream then,
  and the replay window of the run is re-sent through ``phase1_publish`` if given).
- Health: ``backend.status()`` (no I/O): ``{"redis": "up"|"probing"|"down", "circuit", ...}``;
  ``await backend.ping()``. Config from env: ``RedisStreamBackend.from_env()`` (REDIS_URL,
  DEEPAGENT_STREAM_MAXLEN, DEEPAGENT_STREAM_TTL_SECONDS; None without REDIS_URL).
- One backend per process and event loop; the handler must be created on the activity's loop.

Client side (``deepagent_temporal.delivery``)::

    merger = TokenStreamMerger()
    async for ev in merger.amerge(backend.subscribe(wf_id, run_id), phase1_iterator):
        ...   # dicts with a strictly increasing `seq`, de-duplicated, `reset` handled
    # or push events yourself: for out in merger.push(ev): ...; merger.flush_stale(); merger.finish()
    # amerge ends at the first `complete` from any source; if Redis may end before Phase 1
    # replays arrive, feed only the durable path's `complete` (as tokens.py does).

``backend.subscribe(wf, run, last_id="0-0")`` yields events (with ``redis_id``, the resume
cursor) until ``complete``, reconnecting with backoff across Redis restarts;
``backend.subscribe_many([(wf, run), ...])`` reads many runs over one connection.

Event dicts: see ``TokenEvent`` (ARCHITECTURE.md). Extra keys: ``task_id`` (reset scope),
``ts`` (emit time, epoch seconds), ``token_count`` on ``llm_end``, ``nostream`` on calls tagged
``nostream`` (e.g. SummarizationMiddleware's summary call; clients may hide them), ``replay``
on events re-sent through Phase 1 after a Redis failure (the merger strips it).
Wire format: ``XADD key MAXLEN ~ N * e <json>`` (one event) or ``b <json list>`` (several
events queued together); Redis I/O is redis-py's asyncio connection, used directly
(``redis_io.RedisConnection``: one pipeline per write, no pool).
Metrics: ``deepagent_temporal.metrics``. Benchmarks: ``bench/bench_streaming.py`` (``Row``,
``percentiles``, ``format_table``, ``median_of``, ``redis_url_for_bench`` are reusable).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers._streaming import _StreamingCallbackHandler

from deepagent_temporal import metrics
from deepagent_temporal.redis_io import RedisConnection

try:  # orjson is a dependency of langgraph-sdk / langsmith; json is the fallback
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, default=str)

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()

    _loads = json.loads

logger = logging.getLogger(__name__)

T = TypeVar("T")

EventType = Literal["token", "llm_start", "llm_end", "reset", "complete"]
Phase1Publish = Callable[[list[dict[str, Any]]], Awaitable[None]]

REDIS = "redis"
TEMPORAL = "temporal"


class TokenEvent(TypedDict, total=False):
    """One streamed event (a plain dict on the wire). See ARCHITECTURE.md."""

    type: EventType
    token: str
    seq: int
    node: str | None
    namespace: list[str]
    llm_call: int
    index: int
    attempt: int
    message_id: str | None
    source: str
    tool_call_chunks: list[dict[str, Any]]
    task_id: str | None
    token_count: int
    ts: float
    error: str
    nostream: bool


_TOKENS_REDIS = metrics.TOKENS_PUBLISHED.labels(transport=REDIS)
_TOKENS_TEMPORAL = metrics.TOKENS_PUBLISHED.labels(transport=TEMPORAL)


def _count_tokens(counter: Any, events: Sequence[dict[str, Any]]) -> None:
    n = sum(1 for e in events if e.get("type") == "token")
    if n:
        counter.inc(n)


# --------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text") or "")
        return "".join(parts)
    return ""


def _graph_namespace(metadata: dict[str, Any] | None) -> tuple[str, ...] | None:
    """Subgraph path of the task that made an LLM call (LangGraph's own convention)."""
    if not metadata or "langgraph_checkpoint_ns" not in metadata:
        return None
    try:
        from langgraph.pregel._messages import graph_namespace

        return tuple(graph_namespace(metadata))
    except Exception:  # pragma: no cover - defensive against langgraph changes
        ns = str(metadata["langgraph_checkpoint_ns"]).split("|")
        return tuple(ns[:-1])


@dataclass
class _Call:
    """State of one LLM call inside one handler."""

    llm_call: int
    node: str | None
    namespace: list[str]
    route: str  # REDIS or TEMPORAL
    nostream: bool = False
    index: int = 0
    message_id: str | None = None
    pending: int = 0  # events enqueued to Redis and not yet acknowledged
    failed_over: bool = False
    ended: bool = False
    error: str | None = None


@dataclass
class _Phase1State:
    buffer: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task | None = None
    error: BaseException | None = None


class TokenCapturingHandler(BaseCallbackHandler, _StreamingCallbackHandler):
    """LangChain callback handler that turns chat-model streaming into token events.

    It is an instance of langchain-core's ``_StreamingCallbackHandler`` protocol, so a chat
    model invoked with ``ainvoke``/``invoke`` streams (``_should_stream``) and fires
    ``on_llm_new_token``. Callbacks run inline and are cheap; transport work happens in tasks
    on the event loop the handler was created in. See the module docstring for the API.
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
        redis: RedisStreamBackend | None = None,
        phase1_publish: Phase1Publish | None = None,
        phase1_interval: float = 0.05,
        phase1_max_batch: int = 256,
        phase1_retries: int = 5,
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
        self.redis = redis
        self.phase1_publish = phase1_publish
        self.phase1_interval = phase1_interval
        self.phase1_max_batch = phase1_max_batch
        self.phase1_retries = phase1_retries
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
        self._calls: dict[UUID, _Call] = {}
        self._all_calls: list[_Call] = []
        self._calls_lock = threading.Lock()
        self._ended: list[_Call] = []  # in end order; summaries are built from them
        self._counted = 0  # ended calls already counted in metrics
        self._redis_pending = 0
        self._redis_idle = asyncio.Event() if loop is not None else None
        if self._redis_idle is not None:
            self._redis_idle.set()
        self._p1 = _Phase1State()
        self.phase1_events: list[dict[str, Any]] = []  # when phase1_publish is None
        self._p1_counted = 0
        self.events_emitted = 0
        self._control_call: _Call | None = None
        if redis is not None and loop is not None and self._loop_thread is not None:
            with contextlib.suppress(RuntimeError):
                redis._ensure_writer()  # bind the writer to this (the activity's) loop
        if emit_reset and self.attempt > 1:
            self._submit(
                None,
                {
                    "type": "reset",
                    "token": "",
                    "node": node,
                    "namespace": list(self.namespace),
                    "task_id": self.task_id,
                    "attempt": self.attempt - 1,
                    "next_attempt": self.attempt,
                    "ts": time.time(),
                },
            )

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
        ns = _graph_namespace(metadata)
        if ns and len(ns) > len(self.namespace):
            # A nested subgraph / sub-agent call inside this task.
            namespace = list(self.namespace) + list(ns[len(self.namespace) :])
            node = (metadata or {}).get("langgraph_node", node)
        elif node is None and metadata:
            node = metadata.get("langgraph_node")
        call = _Call(
            llm_call=next(self._counter),
            node=node,
            namespace=namespace,
            route=TEMPORAL,  # decided on the loop thread
            nostream=bool(tags and "nostream" in tags),
        )
        with self._calls_lock:
            self._calls[run_id] = call
            self._all_calls.append(call)
        ev = self._base(call, "llm_start")
        self._submit(call, ev)

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
            text = content if type(content) is str else _text_of(content)
            tcc = getattr(message, "tool_call_chunks", None)
            if tcc:
                tool_call_chunks = [dict(c) for c in tcc]
            if call.message_id is None:
                call.message_id = message.id
        else:
            text = token if type(token) is str else _text_of(token)
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
        if call.nostream:
            ev["nostream"] = True
        call.index += 1
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

    def _base(self, call: _Call, type_: str) -> dict[str, Any]:
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
        return ev

    # -- hand-off to the loop -----------------------------------------------------------

    def _submit(self, call: _Call | None, ev: dict[str, Any], end: bool = False) -> None:
        loop = self._loop
        if loop is None:  # no event loop at all: keep events for the activity result
            ev["source"] = TEMPORAL
            self.phase1_events.append(ev)
            self.events_emitted += 1
            return
        if threading.get_ident() == self._loop_thread:
            self._dispatch(call, ev, end)
        else:
            loop.call_soon_threadsafe(self._dispatch, call, ev, end)

    def _dispatch(self, call: _Call | None, ev: dict[str, Any], end: bool) -> None:
        """Runs on the loop thread: route one event (in emit order)."""
        self.events_emitted += 1
        if self._sink is not None:
            self._sink(ev)
        if call is None:  # a control event (reset): its own pseudo call
            call = _Call(llm_call=-1, node=self.node, namespace=self.namespace, route=TEMPORAL)
            self._control_call = call
            self._all_calls.append(call)
            call.route = REDIS if self._redis_available() else TEMPORAL
            if call.route == TEMPORAL:
                self._replay_stale()
        elif ev["type"] == "llm_start":
            if self._redis_available():
                call.route = REDIS
            else:
                call.route = TEMPORAL
                if self.redis is not None:
                    metrics.FAILOVERS.labels(reason="circuit_open").inc()
            self._replay_stale()
        if call.route == REDIS:
            redis = self.redis
            assert redis is not None
            if not redis.circuit.allow():
                self._failover(call, "circuit_open")
            else:
                ev["source"] = REDIS
                call.pending += 1
                self._redis_pending += 1
                assert self._redis_idle is not None
                self._redis_idle.clear()
                redis.enqueue(self.workflow_id, self.run_id, ev, self, call)
        if call.route == TEMPORAL:
            ev["source"] = TEMPORAL
            self._p1_add([ev])
        if end:
            call.ended = True
            call.error = ev.get("error")
            self._ended.append(call)

    def _redis_available(self) -> bool:
        return self.redis is not None and self.redis.available()

    # -- Redis acknowledgements (called by the backend's writer, on the loop thread) -----

    def _redis_acked(self, call: _Call, n: int) -> None:
        call.pending -= n
        self._redis_done(n)

    def _redis_failed(self, call: _Call, n: int) -> None:
        call.pending -= n
        self._failover(call, "redis_error")
        self._redis_done(n)

    def _redis_done(self, n: int) -> None:
        self._redis_pending -= n
        if self._redis_pending <= 0 and self._redis_idle is not None:
            self._redis_pending = 0
            self._redis_idle.set()

    def _failover(self, call: _Call, reason: str) -> None:
        """Switch a Redis-routed call to Phase 1, replaying what Redis may have lost."""
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
        self._replay_all()

    def _replay_all(self) -> None:
        if self.redis is None:
            return
        events = self.redis.take_replay(self.workflow_id, self.run_id, stale_only=False)
        self._p1_replay(events)

    def _replay_stale(self) -> None:
        if self.redis is None:
            return
        events = self.redis.take_replay(self.workflow_id, self.run_id, stale_only=True)
        self._p1_replay(events)

    def _p1_replay(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        metrics.EVENTS_REPLAYED.inc(len(events))
        self._p1_add([{**e, "source": TEMPORAL, "replay": True} for e in events])

    # -- Phase 1 batching ----------------------------------------------------------------

    def _p1_add(self, events: list[dict[str, Any]]) -> None:
        if self.phase1_publish is None:
            self.phase1_events.extend(events)
            return
        p1 = self._p1
        p1.buffer.extend(events)
        if p1.task is not None and not p1.task.done():
            return  # the drain loop picks it up
        if len(p1.buffer) >= self.phase1_max_batch:
            self._p1_kick()
        elif p1.timer is None:
            assert self._loop is not None
            p1.timer = self._loop.call_later(self.phase1_interval, self._p1_kick)

    def _p1_kick(self) -> None:
        p1 = self._p1
        if p1.timer is not None:
            p1.timer.cancel()
            p1.timer = None
        if p1.task is None or p1.task.done():
            assert self._loop is not None
            p1.task = self._loop.create_task(self._p1_drain())

    async def _p1_drain(self) -> None:
        p1 = self._p1
        assert self.phase1_publish is not None
        while p1.buffer:
            if p1.error is not None:
                return
            batch = p1.buffer[: self.phase1_max_batch]
            del p1.buffer[: len(batch)]
            delay = 0.05
            for attempt in range(self.phase1_retries + 1):
                try:
                    await self.phase1_publish(batch)
                    metrics.PHASE1_BATCHES.inc()
                    _count_tokens(_TOKENS_TEMPORAL, batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    if attempt >= self.phase1_retries:
                        logger.error("Phase 1 publish failed for good: %r", exc)
                        p1.error = exc
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            if len(p1.buffer) < self.phase1_max_batch and p1.buffer:
                # let more events accumulate up to the interval (bounded latency)
                await asyncio.sleep(self.phase1_interval)

    # -- end of the activity -------------------------------------------------------------

    async def flush(self) -> list[dict[str, Any]]:
        """Deliver everything (Redis acknowledged or sent through Phase 1); return summaries.

        Await this before the activity returns. Raises if Phase 1 publishing failed.
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
        p1 = self._p1
        while True:
            if p1.timer is not None or (p1.buffer and (p1.task is None or p1.task.done())):
                self._p1_kick()
            task = p1.task
            if task is not None and not task.done():
                await task
            if not p1.buffer or p1.error is not None:
                break
        if p1.error is not None:
            raise RuntimeError(f"Phase 1 token publish failed: {p1.error!r}") from p1.error
        if self.phase1_publish is None:
            _count_tokens(_TOKENS_TEMPORAL, self.phase1_events[self._p1_counted :])
            self._p1_counted = len(self.phase1_events)
        for call in self._ended[self._counted :]:
            metrics.LLM_CALLS.labels(transport=self._transport_of(call)).inc()
        self._counted = len(self._ended)
        return self.summaries

    @staticmethod
    def _transport_of(call: _Call) -> str:
        return TEMPORAL if (call.route == TEMPORAL or call.failed_over) else REDIS

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """One small dict per ended LLM call (what Event History keeps)."""
        out = []
        for call in self._ended:
            summary: dict[str, Any] = {
                "token_count": call.index,
                "llm_call": call.llm_call,
                "message_id": call.message_id,
                "transport": self._transport_of(call),
                "node": call.node,
                "attempt": self.attempt,
            }
            if call.failed_over:
                summary["failover"] = True
            if call.namespace:
                summary["namespace"] = call.namespace
            if call.error:
                summary["error"] = call.error[:200]
            out.append(summary)
        return out

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


# --------------------------------------------------------------------------------------
# Transport: Redis Streams (Phase 2)
# --------------------------------------------------------------------------------------


class CircuitBreaker:
    """closed -> (failure) -> open -> (cooldown) -> half_open probe -> closed | open."""

    def __init__(
        self,
        cooldown: float = 1.0,
        max_cooldown: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_cooldown = cooldown
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.state = "closed"
        self.opened_at = 0.0
        self.generation = 0  # incremented each time the circuit opens
        self.failures = 0

    def allow(self) -> bool:
        return self.state == "closed"

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open":
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
        if self.state == "closed":
            self.generation += 1
        self.state = "open"
        self.opened_at = self.clock()
        metrics.CIRCUIT_STATE.set(1)

    def record_success(self) -> None:
        if self.state != "closed":
            logger.info("Redis circuit closed: new LLM calls stream through Redis again")
        self.state = "closed"
        self.cooldown = self.base_cooldown
        metrics.CIRCUIT_STATE.set(0)


@dataclass(slots=True)
class _WriteItem:
    key: str
    data: bytes  # the event, JSON-encoded once
    is_token: bool
    owner: TokenCapturingHandler | None
    call: Any  # _Call, or an asyncio.Future for direct publishes


class RedisUnavailable(ConnectionError):
    """Redis could not be written (circuit open, timeout or connection error)."""


class RedisStreamBackend:
    """Redis Streams transport: pipelined publisher with a circuit breaker, and subscriber.

    One instance per process is enough (it multiplexes all runs through one writer task).
    Entries: ``XADD key MAXLEN ~ maxlen * e <json event>`` or ``b <json list of events>`` when
    several events of one run were queued together; ``EXPIRE key ttl`` on every write.
    """

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379/0",
        *,
        maxlen: int = 10000,
        ttl_seconds: int = 3600,
        key_prefix: str = "deepagent:stream",
        op_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        cooldown_seconds: float = 1.0,
        max_cooldown_seconds: float = 15.0,
        replay_window_seconds: float = 60.0,
        replay_max_events_per_run: int = 10_000,
        replay_max_runs: int = 256,
        replay_max_events: int = 200_000,
        max_events_per_entry: int = 256,
    ) -> None:
        self.redis_url = redis_url
        self.maxlen = int(maxlen)
        self.ttl_seconds = int(ttl_seconds)
        self.key_prefix = key_prefix
        self.op_timeout = op_timeout
        self.connect_timeout = connect_timeout
        self.circuit = CircuitBreaker(cooldown_seconds, max_cooldown_seconds)
        self.replay_window_seconds = replay_window_seconds
        self.replay_max_events_per_run = replay_max_events_per_run
        self.replay_max_runs = replay_max_runs
        self.replay_max_events = replay_max_events
        self._replay_total = 0
        self.max_events_per_entry = max_events_per_entry
        self._conn: RedisConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expired: dict[str, float] = {}  # key -> monotonic time of the last EXPIRE
        self.expire_refresh_seconds = min(1.0, ttl_seconds / 10)
        self._queue: list[_WriteItem] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        # run -> deque[(generation, monotonic time, event)] of events written to Redis
        self._replay: OrderedDict[tuple[str, str], deque] = OrderedDict()
        self.writes = 0  # pipelines executed
        self.events_written = 0

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, **kwargs: Any
    ) -> RedisStreamBackend | None:
        """Build from REDIS_URL / DEEPAGENT_STREAM_MAXLEN / DEEPAGENT_STREAM_TTL_SECONDS."""
        env = dict(os.environ if env is None else env)
        url = env.get("REDIS_URL")
        if not url:
            return None
        return cls(
            url,
            maxlen=int(env.get("DEEPAGENT_STREAM_MAXLEN", "10000")),
            ttl_seconds=int(env.get("DEEPAGENT_STREAM_TTL_SECONDS", "3600")),
            **kwargs,
        )

    def status(self) -> dict[str, Any]:
        """For /readyz and logs: circuit state and counters (no I/O)."""
        c = self.circuit
        return {
            "redis": "up"
            if c.state == "closed"
            else ("probing" if c.state == "half_open" else "down"),
            "circuit": c.state,
            "failures": c.failures,
            "failovers_generation": c.generation,
            "pipelines": self.writes,
            "events_written": self.events_written,
            "queued": len(self._queue),
        }

    def stream_key(self, workflow_id: str, run_id: str) -> str:
        return f"{self.key_prefix}:{workflow_id}:{run_id}"

    # -- connection ------------------------------------------------------------------

    async def _connect(self, client_name: str) -> RedisConnection:
        return await _io_with_timeout(
            RedisConnection.open(self.redis_url, client_name=client_name), self.connect_timeout
        )

    async def _writer_conn(self) -> RedisConnection:
        conn = self._conn
        if conn is None or not conn.connected:
            conn = self._conn = await self._connect("deepagent-stream-writer")
            self._expired.clear()  # a new connection may be a new (empty) server
        return conn

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        self._expired.clear()
        if conn is not None:
            await conn.close()

    def _ensure_writer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # first use, or a new event loop (tests): fresh connection and writer (the
            # old writer closed its connection when its loop cancelled it)
            self._conn = None
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._writer = None
            self._probe = None
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop(), name="redis-stream-writer")

    def available(self) -> bool:
        """True if new LLM calls should use Redis (circuit closed).

        While the circuit is open a background task probes Redis (PING) every cooldown
        (exponential, capped) and closes the circuit when it answers.
        """
        if self.circuit.state == "closed":
            return True
        self._ensure_prober()
        return False

    def _ensure_prober(self) -> None:
        if self._probe is None or self._probe.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._probe = loop.create_task(self._probe_loop(), name="redis-stream-probe")

    async def _probe_loop(self) -> None:
        c = self.circuit
        while c.state != "closed":
            wait = c.opened_at + c.cooldown - c.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if c.state == "closed":
                return
            c.state = "half_open"
            conn: RedisConnection | None = None
            try:
                conn = await self._connect("deepagent-stream-probe")
                await _io_with_timeout(conn.command(b"PING"), self.op_timeout)
            except asyncio.CancelledError:
                c.state = "open"
                raise
            except Exception:  # noqa: BLE001
                metrics.REDIS_ERRORS.labels(op="probe").inc()
                c.record_failure()
                continue
            finally:
                if conn is not None:
                    await conn.close()
            await self._drop_conn()  # the writer reconnects (its old connection is dead)
            c.record_success()

    async def ping(self) -> bool:
        """One PING on a fresh connection, within the bounded timeouts."""
        try:
            conn = await self._connect("deepagent-stream-ping")
        except Exception:  # noqa: BLE001
            return False
        try:
            await _io_with_timeout(conn.command(b"PING"), self.op_timeout)
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            await conn.close()

    # -- publishing ------------------------------------------------------------------

    def enqueue(
        self,
        workflow_id: str,
        run_id: str,
        event: dict[str, Any],
        owner: TokenCapturingHandler | None = None,
        call: Any = None,
    ) -> None:
        """Queue one event (loop thread only). The owner is told ack/fail per event."""
        if self._writer is None or self._writer.done():
            self._ensure_writer()
        run = (workflow_id, run_id)
        data = _dumps(event)
        self._remember(run, data)
        self._queue.append(
            _WriteItem(
                self.stream_key(workflow_id, run_id),
                data,
                event.get("type") == "token",
                owner,
                call,
            )
        )
        assert self._wakeup is not None
        self._wakeup.set()

    async def publish(
        self, workflow_id: str, run_id: str, events: Sequence[dict[str, Any]]
    ) -> None:
        """Write events and wait for Redis to acknowledge them; raises RedisUnavailable."""
        if not events:
            return
        if not self.available():
            raise RedisUnavailable("Redis circuit is open")
        self._ensure_writer()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        remaining = [len(events)]
        key = self.stream_key(workflow_id, run_id)
        for ev in events:
            self._queue.append(
                _WriteItem(key, _dumps(ev), ev.get("type") == "token", None, (fut, remaining))
            )
        assert self._wakeup is not None
        self._wakeup.set()
        await fut

    async def publish_complete(
        self,
        workflow_id: str,
        run_id: str,
        *,
        phase1_publish: Phase1Publish | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Append the ``complete`` entry. Returns False if Redis could not be written.

        If Redis failed since this run's last events were written, and ``phase1_publish``
        is given, the run's replay window is re-sent through it first (the client dedupes).
        """
        ev = {"type": "complete", "token": "", "ts": time.time(), **(extra or {})}
        ok = True
        try:
            await self.publish(workflow_id, run_id, [ev])
        except Exception:  # noqa: BLE001
            ok = False
        if phase1_publish is not None:
            stale = self.take_replay(workflow_id, run_id, stale_only=ok)
            if stale:
                metrics.EVENTS_REPLAYED.inc(len(stale))
                await phase1_publish([{**e, "source": TEMPORAL, "replay": True} for e in stale])
        self.forget_run(workflow_id, run_id)
        return ok

    async def _write_loop(self) -> None:
        """Single writer: one pipeline in flight; what queues meanwhile rides the next one.

        The writer owns the connection: it closes it when it ends (``aclose``, or its
        event loop shutting down).
        """
        assert self._wakeup is not None
        wakeup = self._wakeup
        try:
            if self.circuit.allow():
                with contextlib.suppress(Exception):  # connect early; a failure counts on write
                    await self._writer_conn()
            while True:
                if not self._queue:
                    wakeup.clear()
                    await wakeup.wait()
                items, self._queue = self._queue, []
                if not items:
                    continue
                if not self.circuit.allow():
                    self._settle(items, ok=False)
                    continue
                await self._write(items)
        finally:
            await self._drop_conn()

    async def _write(self, items: list[_WriteItem]) -> None:
        """One pipeline (XADDs and EXPIREs for ``items``), settled ok or failed."""
        try:
            conn = self._conn
            if conn is None or not conn.connected:
                conn = await self._writer_conn()
            started = time.monotonic()
            commands, expire_keys = self._commands(items, started)
            t0 = time.perf_counter()
            await _io_with_timeout(conn.pipeline(commands), self.op_timeout)
        except asyncio.CancelledError:
            self._settle(items, ok=False)
            raise
        except Exception as exc:  # noqa: BLE001
            await self._write_failed(items, exc)
            return
        for key in expire_keys:
            self._expired[key] = started
        if len(self._expired) > 10000:
            self._expired.clear()
        metrics.REDIS_PUBLISH_LATENCY.observe(time.perf_counter() - t0)
        metrics.REDIS_PIPELINE_EVENTS.observe(len(items))
        self.writes += 1
        self.events_written += len(items)
        n_tokens = sum(1 for it in items if it.is_token)
        if n_tokens:
            _TOKENS_REDIS.inc(n_tokens)
        self._settle(items, ok=True)

    def _commands(
        self, items: list[_WriteItem], now: float
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """The pipeline for ``items`` and the keys it refreshes the TTL of."""
        by_key: dict[str, list[bytes]] = {}
        for it in items:
            by_key.setdefault(it.key, []).append(it.data)
        commands: list[tuple[Any, ...]] = []
        step = self.max_events_per_entry
        expire_keys = []
        for key, evs in by_key.items():
            for i in range(0, len(evs), step):
                part = evs[i : i + step]
                if len(part) == 1:
                    fields: tuple[Any, ...] = (b"e", part[0])
                else:
                    fields = (b"b", b"[" + b",".join(part) + b"]")
                commands.append((b"XADD", key, b"MAXLEN", b"~", self.maxlen, b"*", *fields))
            last = self._expired.get(key)
            if last is None or now - last >= self.expire_refresh_seconds:
                commands.append((b"EXPIRE", key, self.ttl_seconds))
                expire_keys.append(key)
        return commands, expire_keys

    async def _write_failed(self, items: list[_WriteItem], exc: BaseException) -> None:
        metrics.REDIS_ERRORS.labels(op="xadd").inc()
        if self.circuit.state == "closed":
            logger.warning("Redis stream write failed (%r): circuit opens", exc)
        self.circuit.record_failure()
        self._settle(items, ok=False)
        self._ensure_prober()
        await self._drop_conn()

    def _settle(self, items: list[_WriteItem], ok: bool) -> None:
        # group consecutive items of one owner/call: one callback per group
        i = 0
        n = len(items)
        while i < n:
            it = items[i]
            j = i + 1
            while j < n and items[j].owner is it.owner and items[j].call is it.call:
                j += 1
            count = j - i
            try:
                if it.owner is not None:
                    if ok:
                        it.owner._redis_acked(it.call, count)
                    else:
                        it.owner._redis_failed(it.call, count)
                elif isinstance(it.call, tuple):
                    fut, remaining = it.call
                    remaining[0] -= count
                    if not fut.done():
                        if not ok:
                            fut.set_exception(RedisUnavailable("Redis write failed"))
                        elif remaining[0] <= 0:
                            fut.set_result(None)
            except Exception:  # noqa: BLE001 - an owner bug must not kill the writer
                logger.exception("token stream ack callback failed")
            i = j

    # -- replay window (what Redis may lose when it dies) -------------------------------

    def _remember(self, run: tuple[str, str], data: bytes) -> None:
        """Keep what was written to Redis for a run, in case Redis loses it.

        Bounded: the last ``replay_window_seconds`` of a run's events (measured from its
        newest event, so an idle run keeps its tail), at most ``replay_max_events_per_run``
        per run, ``replay_max_runs`` runs and ``replay_max_events`` in total (LRU).
        """
        replay = self._replay
        dq = replay.get(run)
        if dq is None:
            dq = replay[run] = deque(maxlen=self.replay_max_events_per_run)
        else:
            replay.move_to_end(run)
        now = time.monotonic()
        full = len(dq) == dq.maxlen
        dq.append((self.circuit.generation, now, data))  # bytes: no GC pressure
        if not full:
            self._replay_total += 1
        horizon = now - self.replay_window_seconds
        while dq[0][1] < horizon:
            dq.popleft()
            self._replay_total -= 1
        while (
            len(replay) > self.replay_max_runs or self._replay_total > self.replay_max_events
        ) and len(replay) > 1:
            _, old = replay.popitem(last=False)
            self._replay_total -= len(old)

    def take_replay(
        self, workflow_id: str, run_id: str, *, stale_only: bool = True
    ) -> list[dict[str, Any]]:
        """Events of a run that Redis may have lost: remove them from the window.

        ``stale_only``: only those written before the last circuit opening (Redis failed
        after they were written, it may have restarted empty); else all of them.
        """
        dq = self._replay.get((workflow_id, run_id))
        if not dq:
            return []
        gen = self.circuit.generation
        if not stale_only:
            out = [_loads(e) for _, _, e in dq]
            self._replay_total -= len(dq)
            dq.clear()
            return out
        if dq[0][0] >= gen:
            return []
        out = []
        while dq and dq[0][0] < gen:
            out.append(_loads(dq.popleft()[2]))
        self._replay_total -= len(out)
        return out

    def forget_run(self, workflow_id: str, run_id: str) -> None:
        dq = self._replay.pop((workflow_id, run_id), None)
        if dq:
            self._replay_total -= len(dq)

    # -- subscribing -----------------------------------------------------------------

    async def subscribe(
        self,
        workflow_id: str,
        run_id: str,
        last_id: str = "0-0",
        *,
        block_ms: int = 1000,
        count: int = 1000,
        max_backoff: float = 2.0,
        stop_on_complete: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield events of a run from ``last_id`` on (``XREAD BLOCK``), until ``complete``.

        Survives Redis restarts (reconnects with backoff and resumes after the last id
        seen); cancel the consuming task (or ``aclose()``) to stop. Each event carries
        ``redis_id`` (its entry id, the resume cursor) and ``source="redis"``.
        """
        async for _run, ev in self.subscribe_many(
            [(workflow_id, run_id)],
            {(workflow_id, run_id): last_id},
            block_ms=block_ms,
            count=count,
            max_backoff=max_backoff,
            stop_on_complete=stop_on_complete,
        ):
            yield ev

    async def subscribe_many(
        self,
        runs: Sequence[tuple[str, str]],
        last_ids: dict[tuple[str, str], str] | None = None,
        *,
        block_ms: int = 1000,
        count: int = 1000,
        max_backoff: float = 2.0,
        stop_on_complete: bool = True,
    ) -> AsyncIterator[tuple[tuple[str, str], dict[str, Any]]]:
        """Like ``subscribe`` for many runs over one connection: yields ``(run, event)``.

        A run stops being read after its ``complete``; the iterator ends when all have.
        """
        cursors: dict[bytes, str] = {}
        run_of: dict[bytes, tuple[str, str]] = {}
        for run in runs:
            key = self.stream_key(*run).encode()
            run_of[key] = (run[0], run[1])
            cursors[key] = (last_ids or {}).get(run, "0-0")
        conn: RedisConnection | None = None
        backoff = 0.05
        try:
            while cursors:
                try:
                    if conn is None or not conn.connected:
                        conn = await self._connect("deepagent-stream-subscriber")
                    keys = list(cursors)
                    async with asyncio.timeout(block_ms / 1000 + max(self.op_timeout, 1.0)):
                        resp = await conn.command(
                            b"XREAD",
                            b"COUNT",
                            count,
                            b"BLOCK",
                            block_ms,
                            b"STREAMS",
                            *keys,
                            *(cursors[k] for k in keys),
                        )
                    backoff = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reconnect on any I/O problem
                    logger.debug("subscriber reconnecting after %r", exc)
                    if conn is not None:
                        await conn.close()
                        conn = None
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, max_backoff)
                    continue
                if not resp:
                    continue
                if isinstance(resp, dict):  # RESP3 (a ?protocol=3 URL) replies with a map
                    resp = resp.items()
                for key, entries in resp:
                    run = run_of[key]
                    for entry_id, fields in entries:
                        eid = entry_id.decode()
                        cursors[key] = eid
                        for ev in _decode_fields(fields):
                            ev["source"] = REDIS
                            ev["redis_id"] = eid
                            yield run, ev
                            if stop_on_complete and ev.get("type") == "complete":
                                cursors.pop(key, None)
                                break
                        if key not in cursors:
                            break
        finally:
            if conn is not None:
                await conn.close()

    async def read_all(self, workflow_id: str, run_id: str) -> list[dict[str, Any]]:
        """All events currently in a run's stream (XRANGE), for tests and tools."""
        conn = await self._connect("deepagent-stream-reader")
        try:
            entries = await _io_with_timeout(
                conn.command(b"XRANGE", self.stream_key(workflow_id, run_id), b"-", b"+"),
                max(self.op_timeout, 5.0),
            )
        finally:
            await conn.close()
        out = []
        for entry_id, fields in entries or []:
            for ev in _decode_fields(fields):
                ev["redis_id"] = entry_id.decode()
                out.append(ev)
        return out

    async def aclose(self) -> None:
        for task in (self._writer, self._probe):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self._drop_conn()
        self._loop = None
        self._writer = None
        self._probe = None


def _decode_fields(fields: list[bytes]) -> list[dict[str, Any]]:
    for i in range(0, len(fields) - 1, 2):
        name, value = fields[i], fields[i + 1]
        if name == b"e":
            return [_loads(value)]
        if name == b"b":
            return list(_loads(value))
    return []


async def _io_with_timeout(aw: Awaitable[T], seconds: float) -> T:
    """Like ``asyncio.timeout``, but a starved event loop does not count as a slow Redis.

    When CPU-bound work (a sync node on the loop, fifty LLM calls starting at once) hogs
    the loop, the timer fires long after its deadline, usually with the reply already
    waiting in the socket. A bounded timeout should measure Redis, so a late timer is
    re-armed (up to 5x ``seconds`` in total) instead of cancelling. No extra task.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    start = loop.time()
    state: list[Any] = [False, None]  # [timed out, timer handle]

    def fire(due: float) -> None:
        now = loop.time()
        if now - due > 0.05 and now < start + 5 * seconds:
            nxt = now + min(seconds, 0.25)
            state[1] = loop.call_at(nxt, fire, nxt)
            return
        state[0] = True
        task.cancel()

    state[1] = loop.call_at(start + seconds, fire, start + seconds)
    try:
        return await aw
    except asyncio.CancelledError:
        if state[0] and task.uncancel() == 0:
            raise TimeoutError(f"Redis did not answer within {seconds}s") from None
        raise
    finally:
        state[1].cancel()


# The delivery side lives in delivery.py; re-exported here for one import path.
from deepagent_temporal.delivery import TokenStreamMerger  # noqa: E402

__all__ = [
    "REDIS",
    "TEMPORAL",
    "CircuitBreaker",
    "Phase1Publish",
    "RedisStreamBackend",
    "RedisUnavailable",
    "TokenCapturingHandler",
    "TokenEvent",
    "TokenStreamMerger",
]
