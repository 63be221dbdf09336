"""Client-side delivery: merge the Redis path and the Temporal path into one stream.

``TokenStreamMerger`` receives events from both paths in any order, with duplicates
(failover replays, at-least-once writes), and yields each event exactly once:

- identity of an LLM call: ``(task_id or node, attempt, llm_call)``; of a token: that plus
  ``index``. Tokens of one call are delivered in ``index`` order (0, 1, 2, ...); a token that
  arrives ahead of a gap waits until the gap is filled (by the other path), or at most
  ``gap_timeout`` seconds (``flush_stale``) / until the stream ends (``finish``).
- ``reset`` for ``(task, attempt=a)``: delivered once; buffered and later events of that task
  with ``attempt <= a`` are dropped (the client discards what it showed of that attempt).
- ``llm_end`` carries ``token_count`` and is delivered after the call's last token.
- every delivered event gets ``seq``, strictly increasing in delivery order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deepagent_temporal.contract import INTERNAL_EVENT_KEYS


@dataclass
class _CallBuf:
    scope: Any
    attempt: int
    next_index: int = 0
    started: bool = False
    ended: bool = False
    buf: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending_end: dict[str, Any] | None = None
    gap_since: float | None = None
    chars: int = 0  # length of the text delivered so far (a snapshot sends the rest)


def _scope(ev: dict[str, Any]) -> Any:
    return ev.get("task_id") or ev.get("node")


class TokenStreamMerger:
    """De-duplicating, ordering merger of token events from several paths. Not thread-safe."""

    def __init__(
        self,
        *,
        gap_timeout: float = 2.0,
        start_seq: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gap_timeout = gap_timeout
        self.clock = clock
        self.seq = start_seq
        self.completed = False
        self._calls: dict[tuple, _CallBuf] = {}
        self._resets: dict[Any, int] = {}
        self._seen_resets: set[tuple] = set()
        self.duplicates = 0
        self.dropped_reset = 0
        self.gaps = 0
        self.snapshots = 0
        self.dropped_gap = 0
        self.delivered = 0

    # -- core ----------------------------------------------------------------------------

    def push(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """Feed one event from any path; returns the events now deliverable, in order."""
        t = ev.get("type", "token")
        if t == "complete":
            if self.completed:
                self.duplicates += 1
                return []
            self.completed = True
            out = self.finish()
            out.append(self._deliver(ev))
            return out
        scope = _scope(ev)
        attempt = int(ev.get("attempt") or 1)
        if t == "reset":
            key = (scope, attempt)
            if key in self._seen_resets:
                self.duplicates += 1
                return []
            self._seen_resets.add(key)
            if attempt > self._resets.get(scope, 0):
                self._resets[scope] = attempt
            for ck, call in self._calls.items():
                if ck[0] == scope and call.attempt <= attempt:
                    self.dropped_reset += len(call.buf)
                    call.buf.clear()
                    call.pending_end = None
                    call.gap_since = None
            return [self._deliver(ev)]
        if attempt <= self._resets.get(scope, 0):
            self.dropped_reset += 1
            return []
        ck = (scope, attempt, ev.get("llm_call"))
        call = self._calls.get(ck)
        if call is None:
            call = self._calls[ck] = _CallBuf(scope, attempt)
        if t == "llm_start":
            if call.started or call.next_index > 0 or call.ended:
                self.duplicates += 1
                return []
            call.started = True
            return [self._deliver(ev)]
        if t == "llm_end":
            if call.ended or call.pending_end is not None:
                self.duplicates += 1
                return []
            count = ev.get("token_count")
            if count is None or call.next_index >= count:
                call.ended = True
                return [self._deliver(ev)]
            call.pending_end = ev
            if call.gap_since is None:
                call.gap_since = self.clock()
            return []
        # token
        idx = int(ev.get("index") or 0)
        if idx < call.next_index or idx in call.buf:
            self.duplicates += 1
            return []
        if idx > call.next_index:
            call.buf[idx] = ev
            if call.gap_since is None:
                call.gap_since = self.clock()
            return []
        call.started = True
        out = [self._deliver_token(call, ev)]
        self._drain(call, out)
        return out

    def _deliver_token(self, call: _CallBuf, ev: dict[str, Any]) -> dict[str, Any]:
        call.next_index += 1
        call.chars += len(ev.get("token") or "")
        return self._deliver(ev)

    def _drain(self, call: _CallBuf, out: list[dict[str, Any]]) -> None:
        while call.next_index in call.buf:
            out.append(self._deliver_token(call, call.buf.pop(call.next_index)))
        if call.pending_end is not None and call.next_index >= (
            call.pending_end.get("token_count") or 0
        ):
            out.append(self._deliver(call.pending_end))
            call.pending_end = None
            call.ended = True
        call.gap_since = self.clock() if (call.buf or call.pending_end) else None

    def settle(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply the durable record of a call (``contract.LLM_RECORD``).

        If this client has fewer tokens of the call than the record counts and the
        record has the call's text, the rest of the text is delivered as one
        ``snapshot`` event (after the tokens delivered so far, so the call's deltas
        still concatenate to its text); then the call's ``llm_end``. Tokens of the call
        that arrive later are duplicates.
        """
        scope = _scope(record)
        attempt = int(record.get("attempt") or 1)
        if attempt <= self._resets.get(scope, 0):
            return []
        ck = (scope, attempt, record.get("llm_call"))
        call = self._calls.get(ck)
        if call is None:
            call = self._calls[ck] = _CallBuf(scope, attempt)
        if call.ended:
            return []
        count = int(record.get("token_count") or 0)
        out: list[dict[str, Any]] = []
        if call.next_index < count:
            text = record.get("text")
            if text is None:
                return []  # the Temporal path carried it: its tokens are on their way
            base = {
                k: record.get(k)
                for k in ("node", "namespace", "task_id", "llm_call", "attempt", "message_id")
            }
            if record.get("nostream"):
                base["nostream"] = True
            if record.get("segment"):
                base["segment"] = record["segment"]
            if not call.started:
                out.append(self._deliver({"type": "llm_start", "token": "", **base}))
                call.started = True
            self.snapshots += 1
            self.dropped_gap += len(call.buf)
            call.buf.clear()
            out.append(
                self._deliver(
                    {
                        "type": "snapshot",
                        "token": text[call.chars :],
                        "index": call.next_index,
                        "snapshot": True,
                        "source": "temporal",
                        **base,
                    }
                )
            )
            call.next_index = count
            call.chars = len(text)
        end = call.pending_end or {
            "type": "llm_end",
            "token": "",
            **{k: record.get(k) for k in ("node", "namespace", "task_id", "llm_call", "attempt")},
            "message_id": record.get("message_id"),
            "token_count": count,
        }
        if "error" in record and "error" not in end:
            end["error"] = record["error"]
        out.append(self._deliver(end))
        call.pending_end = None
        call.ended = True
        call.gap_since = None
        return out

    def _deliver(self, ev: dict[str, Any]) -> dict[str, Any]:
        out = dict(ev)
        for k in INTERNAL_EVENT_KEYS:
            out.pop(k, None)
        self.seq += 1
        out["seq"] = self.seq
        self.delivered += 1
        return out

    def flush_stale(self, now: float | None = None) -> list[dict[str, Any]]:
        """Give up on gaps older than ``gap_timeout``: deliver what waits behind them."""
        now = self.clock() if now is None else now
        out: list[dict[str, Any]] = []
        for call in self._calls.values():
            if call.gap_since is not None and now - call.gap_since >= self.gap_timeout:
                self._skip_gaps(call, out)
        return out

    def _skip_gaps(self, call: _CallBuf, out: list[dict[str, Any]]) -> None:
        while call.buf:
            first = min(call.buf)
            if first > call.next_index:
                self.gaps += first - call.next_index
                call.next_index = first
            self._drain(call, out)
        if call.pending_end is not None:
            out.append(self._deliver(call.pending_end))
            call.pending_end = None
            call.ended = True
        call.gap_since = None

    def finish(self) -> list[dict[str, Any]]:
        """The stream ended: deliver everything still buffered (gaps are skipped)."""
        out: list[dict[str, Any]] = []
        pending = [c for c in self._calls.values() if c.buf or c.pending_end is not None]
        pending.sort(key=lambda c: c.gap_since or 0.0)
        for call in pending:
            self._skip_gaps(call, out)
        return out

    @property
    def waiting(self) -> int:
        """Number of events held back behind a gap."""
        return sum(len(c.buf) + (c.pending_end is not None) for c in self._calls.values())

    # -- async convenience -----------------------------------------------------------

    async def amerge(
        self,
        *sources: AsyncIterator[dict[str, Any]],
        stop_on_complete: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """Merge async sources of events; ends at ``complete`` or when all sources end."""
        tick = max(self.gap_timeout / 4, 0.01)
        async with fan_in(dict(enumerate(sources))) as queue:
            live = len(sources)
            while live:
                try:
                    _, item = await asyncio.wait_for(queue.get(), tick if self.waiting else None)
                except TimeoutError:
                    for out in self.flush_stale():
                        yield out
                    continue
                if item is SOURCE_DONE:
                    live -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                for out in self.push(item):
                    yield out
                if stop_on_complete and self.completed:
                    return
            for out in self.finish():
                yield out


#: what :func:`fan_in` queues as ``(name, SOURCE_DONE)`` when a source has ended
SOURCE_DONE = object()
#: how long leaving :func:`fan_in` waits for each source to stop
PUMP_STOP_SECONDS = 1.0


@contextlib.asynccontextmanager
async def fan_in(sources: Mapping[Any, AsyncIterator[Any]]) -> AsyncIterator[asyncio.Queue]:
    """Pump several async iterators into one queue of ``(name, item)``, in arrival order.

    A source that raises puts ``(name, exception)``; every source ends with
    ``(name, SOURCE_DONE)``. Leaving the context cancels the pumps and closes the
    sources (a Redis subscription's connection, a Temporal poll).
    """
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(name: Any, src: AsyncIterator[Any]) -> None:
        try:
            async for item in src:
                queue.put_nowait((name, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - forwarded to the consumer
            queue.put_nowait((name, exc))
        finally:
            queue.put_nowait((name, SOURCE_DONE))

    tasks = [asyncio.ensure_future(pump(name, src)) for name, src in sources.items()]
    try:
        yield queue
    finally:
        for task in tasks:
            task.cancel()
        # A Temporal long poll may answer its cancellation only when the server does:
        # leaving does not wait for that (the pump ends on its own, cancelled).
        await asyncio.wait(tasks, timeout=PUMP_STOP_SECONDS)
        for src in sources.values():
            aclose = getattr(src, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(aclose(), PUMP_STOP_SECONDS)


async def quiet(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The Redis path is best effort here: the Temporal path decides how the run ends."""
    with contextlib.suppress(Exception):
        async for ev in events:
            yield ev


__all__ = ["SOURCE_DONE", "TokenStreamMerger", "fan_in", "quiet"]
