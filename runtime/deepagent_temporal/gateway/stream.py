"""One run segment as the Agent Server's SSE events, resumable from any event id.

Reads the run's workflow stream (durable: graph chunks, custom output, run markers,
Temporal-path tokens, durable call records) and its Redis stream (live tokens) and merges
them with :class:`~deepagent_temporal.client.delivery.TokenStreamMerger`, like
``TemporalDeepAgent.astream`` does, but keeping what is needed to give every SSE event an
id that is a resume cursor (:mod:`.cursor`). Tokens go from Redis to the socket directly.

Inputs are consumed in batches (one workflow-stream item; one Redis entry, whose events
arrive together): every event of a batch but the last carries the cursor from before the
batch, the last one the cursor after it. Resuming replays the consumed inputs silently
into a fresh merger, restores the progress of the calls the cursor names, and goes on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from deepagent_temporal.client.delivery import SOURCE_DONE, TokenStreamMerger, fan_in, quiet
from deepagent_temporal.client.run_stream import RunStreamReader
from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    GRAPH_TOPIC,
    LLM_RECORD,
    RUN_ENDING_MARKERS,
    RUN_ERROR,
    RUN_PAUSE,
    RUN_TOPIC,
    TOKENS_TOPIC,
)
from deepagent_temporal.gateway.cursor import CallProgress, Cursor, call_hash
from deepagent_temporal.gateway.gate import OFFSET_QUERY, RedisGate
from deepagent_temporal.gateway.messages import (
    last_chunk,
    message_ids,
    messages_event,
    node_output_events,
)
from deepagent_temporal.gateway.replay import TOPICS, Item, ReplayMixin, _key
from deepagent_temporal.transport.temporal import expand

#: stream modes answered from token events
TOKEN_MODES = frozenset({"messages-tuple"})
END_GRACE_SECONDS = 10.0
RECORD_GRACE_SECONDS = 3.0


@dataclass
class StreamSpec:
    """What one SSE stream of a run segment shows."""

    modes: set[str]
    subgraphs: bool = False
    #: merged into each ``messages`` event's metadata (thread_id, run_id, assistant_id...)
    metadata: dict[str, Any] = field(default_factory=dict)


class SegmentStream(ReplayMixin):
    """SSE items of one run segment (a LangGraph run), from its start or from a cursor."""

    def __init__(
        self,
        reader: RunStreamReader,
        redis: Any,
        handle: Any,
        run_id: str,
        segment: int,
        start_offset: int,
        spec: StreamSpec,
        cursor: Cursor | None = None,
    ) -> None:
        self.reader = reader
        self.redis = redis
        self.handle = handle
        self.run_id = run_id
        self.segment = segment
        self.spec = spec
        self.want_tokens = bool(spec.modes & TOKEN_MODES)
        self.resumed = cursor is not None
        cursor = cursor or Cursor(offset=start_offset, tokens=self.want_tokens)
        self.start_offset = start_offset
        self.cursor = cursor
        self.offset = cursor.offset
        self.redis_id = cursor.redis_id
        self.merger = TokenStreamMerger(gap_timeout=math.inf)
        self.progress: dict[str, CallProgress] = {}
        self.open_calls: set[tuple[Any, ...]] = set()
        self.records: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
        self.batch_resets: list[tuple[Any, int]] = []
        self.suppress_resets = {(s, a) for s, a in cursor.resets}
        self.ending_deadline: float | None = None
        self.need_redis_complete = False
        self.redis_complete_seen = False
        self.redis_idle_at = -math.inf
        self.error: str | None = None
        self.ended_by_marker = False
        self.paused = False
        self.interrupt_shown = False
        self._replayed: dict[str, CallProgress] = {}
        self.pending_fill: dict[str, CallProgress] = dict(cursor.calls)
        #: ids of messages streamed or in the state: a node's output repeats none of them
        self.seen_messages: set[str] = set()
        #: calls with tokens shown and no chunk marked ``last`` yet
        self.unfinished: dict[str, bool] = {}
        self.gate = RedisGate(self._current)
        self._queue: asyncio.Queue | None = None
        self._asks: set[asyncio.Future] = set()

    # ------------------------------------------------------------- bookkeeping

    def _current(self, ev: dict[str, Any]) -> bool:
        return int(ev.get("segment") or 0) >= self.segment

    def _track(self, ev: dict[str, Any]) -> bool:
        """Update progress with a delivered event; False if it must not be shown."""
        t = ev.get("type")
        if t == "reset":
            scope, attempt = ev.get("task_id") or ev.get("node"), int(ev.get("attempt") or 1)
            for key in [k for k in self.open_calls if k[0] == scope and k[1] <= attempt]:
                self.open_calls.discard(key)
            self.batch_resets.append((scope, attempt))
            if (scope, attempt) in self.suppress_resets:
                self.suppress_resets.discard((scope, attempt))
                return False
            return True
        if t not in ("llm_start", "token", "snapshot", "llm_end"):
            return True
        if ev.get("message_id"):
            self.seen_messages.add(ev["message_id"])
        p = self.progress.setdefault(call_hash(ev), CallProgress())
        p.started = True
        if t == "llm_start":
            self.open_calls.add(_key(ev))
        elif t == "llm_end":
            self.open_calls.discard(_key(ev))
            p.ended = True
        else:
            p.next_index = int(ev.get("index") or 0) + 1
            p.chars += len(ev.get("token") or "")
        return True

    def _id(self) -> str:
        return Cursor(
            self.offset, self.redis_id, self.progress, self.batch_resets, self.want_tokens
        ).encode()

    def _end_batch(self, offset: int | None = None, redis_id: str | None = None) -> None:
        if offset is not None:
            self.offset = max(self.offset, offset)
        if redis_id is not None:
            self.redis_id = redis_id
        for h in [h for h, p in self.progress.items() if p.ended]:
            del self.progress[h]
        self.batch_resets = []

    def _emit(
        self, shown: list[Item], offset: int | None = None, redis_id: str | None = None
    ) -> list[Item]:
        """One batch's events: all but the last keep the cursor from when they were made
        (the batch not consumed yet, the progress up to them); the last one says the
        batch was consumed."""
        if not shown:
            self._end_batch(offset, redis_id)
            return []
        out = shown[:-1]  # each with the cursor taken when it was made
        self._end_batch(offset, redis_id)
        out.append((shown[-1][0], shown[-1][1], self._id()))
        return out

    def _show_tokens(self, delivered: list[dict[str, Any]]) -> list[Item]:
        shown: list[Item] = []
        for ev in delivered:
            if not self._track(ev) or not self.want_tokens or ev.get("nostream"):
                continue
            h = call_hash(ev)
            if ev.get("type") == "llm_end":
                if self.unfinished.pop(h, None) is None or ev.get("error"):
                    continue
                ev = last_chunk(ev)  # the empty last chunk in its place
            elif ev.get("type") not in ("token", "snapshot"):
                continue
            elif not ev.get("token") and not ev.get("tool_call_chunks"):
                continue
            elif ev.get("chunk_position") == "last":
                self.unfinished.pop(h, None)
            else:
                self.unfinished[h] = True
            name, data = messages_event(ev, self.spec.metadata, self.spec.subgraphs)
            shown.append((name, data, self._id()))
        return shown

    def _settle(self, force: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        now = time.monotonic()
        for key, (arrived, record) in list(self.records.items()):
            if (
                force
                or self.redis is None
                or self.redis_complete_seen
                or self.redis_idle_at > arrived
                or now - arrived >= RECORD_GRACE_SECONDS
            ):
                del self.records[key]
                out.extend(self.merger.settle(record))
        return out

    # ----------------------------------------------------------------- inputs

    def _graph_item(self, topic: str, data: Any, offset: int = -1) -> list[tuple[str, Any]]:
        modes = self.spec.modes
        if topic == CUSTOM_TOPIC:
            return [("custom", data)] if "custom" in modes else []
        if not isinstance(data, dict):
            return []
        kind = data.get("kind")
        if topic == GRAPH_TOPIC:
            chunk = data.get("data")
            out: list[tuple[str, Any]] = []
            if kind == "values":
                self.seen_messages |= message_ids(chunk)
            elif kind == "updates" and isinstance(chunk, dict):
                if "__interrupt__" in chunk:
                    self.interrupt_shown = True  # LangGraph's own interrupt update
                out = node_output_events(chunk, self.seen_messages, self.spec.metadata)
                out = [
                    e for i, e in enumerate(out) if self.want_tokens and self._first_time(offset, i)
                ]
            return [*out, (kind, chunk)] if kind in modes else out
        if topic != RUN_TOPIC or not self._current(data) or kind not in RUN_ENDING_MARKERS:
            return []
        if self.ending_deadline is None:
            self.ending_deadline = time.monotonic() + END_GRACE_SECONDS
            self.need_redis_complete = bool(data.get("redis_complete")) and self.redis is not None
        self.ended_by_marker = True
        if kind == RUN_ERROR:
            self.error = str(data.get("data") or "run failed")
        if kind == RUN_PAUSE:
            self.paused = True
            interrupts = {"__interrupt__": list((data.get("data") or {}).get("interrupts") or [])}
            if "updates" in modes:
                return [] if self.interrupt_shown else [("updates", interrupts)]
            if "values" in modes:
                return [("values", interrupts)]
        return []

    def _first_time(self, offset: int, index: int) -> bool:
        """A node's output message is delivered once: its event's cursor names it as a
        call that ended (the cursor of a cut between it and its item's ``updates``). Named
        by its place in the stream: the id of a message the graph gave one may differ when
        the workflow is replayed."""
        h = call_hash({"task_id": f"output:{offset}:{index}"})
        p = self.pending_fill.pop(h, None)
        if p is not None and p.ended:
            return False
        self.progress[h] = CallProgress(started=True, ended=True)
        return True

    def _temporal_item(self, item: Any) -> list[Item]:
        shown: list[Item] = []
        if item.topic == TOKENS_TOPIC:
            delivered: list[dict[str, Any]] = []
            for raw in expand(item.data):
                kind = raw.get("type")
                if kind == "complete" or not self._current(raw):
                    continue
                if kind == LLM_RECORD:
                    self._saw_record(raw)
                    self.records[_key(raw)] = (time.monotonic(), raw)
                    continue
                self.gate.know(raw)
                delivered.extend(self.merger.push(raw))
            shown = self._show_tokens(delivered)
        else:
            graph = self._graph_item(item.topic, item.data, item.offset)
            shown = [(n, d, self._id()) for n, d in graph]
        return self._emit(shown, offset=item.offset + 1)

    def _redis_entry(self, entry_id: str, events: list[dict[str, Any]]) -> list[Item]:
        delivered: list[dict[str, Any]] = []
        for ev in events:
            if not self._current(ev):
                continue
            if ev.get("type") == "complete":
                self.redis_complete_seen = True
                continue
            delivered.extend(self.merger.push(ev))
        return self._emit(self._show_tokens(delivered), redis_id=entry_id)

    # ------------------------------------------------------------------- run

    async def items(self) -> AsyncIterator[Item]:
        if self.resumed:
            for item in await self._replay():
                yield item
        sources: dict[str, AsyncIterator[Any]] = {
            "temporal": self.reader.items(self.handle, TOPICS, self.offset, None)
        }
        if self.redis is not None and self.want_tokens:
            sources["redis"] = quiet(
                self.redis.subscribe(
                    self.handle.id,
                    self.run_id,
                    last_id=self.redis_id,
                    stop_on_complete=False,
                    on_idle=self._on_idle,
                )
            )
        async with fan_in(sources) as queue:
            self._queue = queue
            while True:
                for item in self._emit(self._show_tokens(self._settle(force=False))):
                    yield item
                if self._ending():
                    break
                timeout = (
                    0.05 if (self.merger.waiting or self.ending_deadline or self.records) else None
                )
                try:
                    first = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    continue
                batch = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                for item in self._consume(batch):
                    yield item
        for ask in self._asks:
            ask.cancel()
        held = [i for e in self.gate.drain() for i in self._redis_entry(*e)]
        for item in held:
            yield item
        settled = self._settle(force=True) + self.merger.finish()
        for item in self._emit(self._show_tokens(settled)):
            yield item

    def _ending(self) -> bool:
        if self.ending_deadline is None:
            return False
        if time.monotonic() >= self.ending_deadline:
            return True
        return (
            self.merger.waiting == 0
            and not self.open_calls
            and not self.records
            and not self.gate.backlog
            and (self.redis_complete_seen or not self.need_redis_complete)
        )

    def last_id(self) -> str:
        """The cursor after everything delivered so far."""
        return self._id()

    def _on_idle(self) -> None:
        self.redis_idle_at = time.monotonic()

    def _consume(self, batch: list[tuple[str, Any]]) -> list[Item]:
        out: list[Item] = []
        entry_id: str | None = None
        entry: list[dict[str, Any]] = []
        for source, payload in batch:
            if source == "redis" and payload is not SOURCE_DONE and isinstance(payload, dict):
                rid = payload.get("redis_id") or self.redis_id
                if entry and rid != entry_id:
                    out.extend(self._admit(entry_id or rid, entry))
                    entry = []
                entry_id = rid
                self._fill_pending(payload)
                entry.append(payload)
                continue
            if entry:
                out.extend(self._admit(entry_id or self.redis_id, entry))
                entry = []
            if source == "gate":
                self.gate.answer(payload)
                out.extend(self._admit())
                continue
            if payload is SOURCE_DONE:
                if source == "temporal" and self.ending_deadline is None:
                    self.ending_deadline = time.monotonic() + END_GRACE_SECONDS
                continue
            if isinstance(payload, BaseException):
                raise payload
            if payload.topic == TOKENS_TOPIC:
                raws = expand(payload.data)
                for raw in raws if self.pending_fill else ():
                    self._fill_pending(raw)
                self.gate.release_for([r for r in raws if r.get("type") == LLM_RECORD])
                out.extend(self._admit())
            out.extend(self._temporal_item(payload))
            out.extend(self._admit())
        if entry:
            out.extend(self._admit(entry_id or self.redis_id, entry))
        return out

    def _admit(self, entry_id: str | None = None, events: Any = None) -> list[Item]:
        """Redis entries through the gate (``gate.py``): the ones that may go now."""
        if entry_id is not None:
            self.gate.add(entry_id, events)
        entries, ask = self.gate.ready(self.offset)
        if ask:
            self._asks.add(asyncio.ensure_future(self._ask_offset()))
        return [item for e in entries for item in self._redis_entry(*e)]

    async def _ask_offset(self) -> None:
        try:
            offset = await self.handle.query(OFFSET_QUERY, result_type=int)
        except Exception:  # noqa: BLE001 - no answer: the Redis path goes on unheld
            offset = -1
        if self._queue is not None:
            self._queue.put_nowait(("gate", offset))

    def _saw_record(self, record: dict[str, Any]) -> None:
        if record.get("message_id"):
            self.seen_messages.add(record["message_id"])

    def _fill_pending(self, ev: dict[str, Any]) -> None:
        if not self.pending_fill or ev.get("type") not in ("llm_start", "token", "llm_end"):
            return
        p = self.pending_fill.pop(call_hash(ev), None)
        if p is not None:
            self._restore(ev, p)

    async def outcome(self) -> tuple[str, str] | None:
        """``(error type, message)`` if the segment did not end well, after ``items``."""
        if self.error is not None:
            kind, _, message = self.error.partition(": ")
            return (kind, message) if message else ("RunError", self.error)
        if self.ended_by_marker:
            return None
        try:
            desc = await self.handle.describe()
        except Exception:  # noqa: BLE001
            return None
        status = desc.status.name if desc.status is not None else "RUNNING"
        if status in ("CANCELED", "TERMINATED"):
            return ("UserInterrupt", f"run {self.handle.id} was {status.lower()}")
        if status in ("FAILED", "TIMED_OUT"):
            return ("RunError", f"run {self.handle.id} {status.lower()}")
        return None


__all__ = ["SegmentStream", "StreamSpec", "TOKEN_MODES"]
