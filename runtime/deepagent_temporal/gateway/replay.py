"""Resuming a run segment's stream from a cursor (``Last-Event-ID``): rebuild the state
the cursor describes by replaying what it counts as consumed, silently, into a fresh
merger, then restore the progress of the calls it names (see :mod:`.stream`)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    GRAPH_TOPIC,
    LLM_RECORD,
    REDIS,
    RUN_TOPIC,
    TOKENS_TOPIC,
)
from deepagent_temporal.gateway.cursor import CallProgress, call_hash
from deepagent_temporal.transport.temporal import expand

Item = tuple[str, Any, str | None]  # (event, data, id)
#: every topic: a cursor must mean the same whatever modes wrote it
TOPICS = [RUN_TOPIC, GRAPH_TOPIC, CUSTOM_TOPIC, TOKENS_TOPIC]


def _redis_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _key(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (ev.get("task_id") or ev.get("node"), int(ev.get("attempt") or 1), ev.get("llm_call"))


class ReplayMixin:
    """``SegmentStream``'s resume (its state lives in the stream)."""

    # the SegmentStream attributes and methods used here
    cursor: Any
    reader: Any
    handle: Any
    redis: Any
    run_id: str
    merger: Any
    records: dict[tuple[Any, ...], tuple[float, dict[str, Any]]]
    progress: dict[str, CallProgress]
    pending_fill: dict[str, CallProgress]
    _replayed: dict[str, CallProgress]
    open_calls: set[tuple[Any, ...]]
    seen_messages: set[str]
    start_offset: int
    redis_complete_seen: bool
    gate: Any
    _track: Any
    _show_tokens: Any
    _graph_item: Any
    _current: Any
    _saw_record: Any
    _end_batch: Any
    _emit: Any

    async def _replay(self) -> list[Item]:
        """Rebuild the state the cursor describes; returns the rest of its open calls."""
        cur = self.cursor
        silent_tokens = cur.tokens
        pending = dict(cur.calls)
        held: dict[str, list[dict[str, Any]]] = {}
        samples: dict[str, dict[str, Any]] = {}
        shown: list[Item] = []

        def feed(ev: dict[str, Any]) -> None:
            self.gate.know(ev)
            if ev.get("message_id"):
                self.seen_messages.add(ev["message_id"])
            h = call_hash(ev)
            p = pending.get(h)
            t = ev.get("type")
            if p is not None and t in ("llm_start", "token", "llm_end"):
                held.setdefault(h, [])
                samples.setdefault(h, ev)
                if (t == "token" and int(ev.get("index") or 0) < p.next_index) or (
                    t == "llm_start" and p.started
                ):
                    # delivered before: into the merger silently (its exact text)
                    for d in self.merger.push(ev):
                        r = self._replayed.setdefault(h, CallProgress())
                        if d.get("type") == "token":
                            r.next_index = int(d.get("index") or 0) + 1
                            r.chars += len(d.get("token") or "")
                else:
                    held[h].append(ev)
                return
            delivered = self.merger.push(ev)
            if silent_tokens:
                for d in delivered:
                    self._track(d)
            else:
                shown.extend(self._show_tokens(delivered))

        if cur.offset > self.start_offset:
            items = self.reader.items(self.handle, TOPICS, self.start_offset, None)
            async with contextlib.aclosing(items):
                async for item in items:
                    if item.offset >= cur.offset:
                        break
                    if item.topic == TOKENS_TOPIC:
                        for raw in expand(item.data):
                            kind = raw.get("type")
                            if kind == "complete" or not self._current(raw):
                                continue
                            if kind == LLM_RECORD:
                                self._saw_record(raw)
                                if call_hash(raw) in pending:
                                    self.records[_key(raw)] = (time.monotonic(), raw)
                                else:
                                    self.merger.settle(raw)
                            else:
                                feed(raw)
                    else:
                        self._graph_item(item.topic, item.data, item.offset)
                    if item.offset >= cur.offset - 1:
                        break
        if self.redis is not None and cur.redis_id != "0-0":
            limit = _redis_order(cur.redis_id)
            try:
                events = await self.redis.read_all(self.handle.id, self.run_id)
            except Exception:  # noqa: BLE001 - Redis lost: records complete the calls
                events = []
            for ev in events:
                if _redis_order(ev.get("redis_id") or "0-0") > limit or not self._current(ev):
                    continue
                if ev.get("type") == "complete":
                    self.redis_complete_seen = True
                    continue
                ev["source"] = REDIS
                feed(ev)
        # the calls the cursor names: restore their progress, then what is left of them
        self.progress = {}
        for h, p in pending.items():
            if h not in held:
                continue  # not seen yet: restored when its first event arrives
            self._restore(samples[h], p)
            del self.pending_fill[h]
        # calls not seen yet keep their progress until they show up
        for d in [e for evs in held.values() for e in evs]:
            shown.extend(self._show_tokens(self.merger.push(d)))
        self._end_batch()
        return self._emit(shown)

    def _restore(self, sample: dict[str, Any], p: CallProgress) -> None:
        """Bring the merger's state of a call to ``p`` (what the client has), silently."""
        base = {
            k: sample.get(k)
            for k in ("node", "namespace", "task_id", "llm_call", "attempt", "message_id")
        }
        if p.started:
            self.merger.push({"type": "llm_start", "token": "", **base})
        have = self._replayed.pop(call_hash(sample), None)
        chars = have.chars if have else 0
        start = have.next_index if have else 0
        for i in range(start, p.next_index):
            pad = "\0" * max(p.chars - chars, 0) if i == p.next_index - 1 else ""
            chars += len(pad)
            self.merger.push({"type": "token", "token": pad, "index": i, **base})
        if p.ended:
            self.merger.push({"type": "llm_end", "token": "", "token_count": p.next_index, **base})
        else:
            self.progress[call_hash(sample)] = CallProgress(p.next_index, p.chars, p.started)
            self.open_calls.add(_key(sample))
        self.gate.known.add(call_hash(sample))
