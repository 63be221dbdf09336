"""The Temporal path: token events batched into the workflow's stream.

Used when Redis is not configured or not healthy. :class:`TemporalBatcher` collects a
handler's events and hands them to a publisher (the activity's workflow-stream topic)
every ``interval`` seconds or ``max_batch`` events, one batch in flight at a time, in
order, with retries. What the publisher sends is :func:`compact`'s form.

Compact form: a batch of token events from one activity is mostly repetition: every token of an LLM
call carries the same node, namespace, task id, attempt, message id, source. A batch is
stored as an ordered list of segments; a run of consecutive tokens of one call becomes
one segment ``{"r": common_fields, "i": first_index, "t": [texts], "ts": first_ts,
"d": [ts deltas in 0.1 ms]}``; any other event (``llm_start``, ``llm_end``, ``reset``, a
token with tool-call chunks) is kept as ``{"e": event}``. About 10 bytes per token plus
the token text, instead of ~300.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from deepagent_temporal import metrics
from deepagent_temporal.contract import TEMPORAL

logger = logging.getLogger(__name__)

TemporalPublish = Callable[[list[dict[str, Any]]], Awaitable[None]]

_TOKENS_TEMPORAL = metrics.TOKENS_PUBLISHED.labels(transport=TEMPORAL)

VERSION = 1
_PER_TOKEN = ("token", "index", "ts", "type")


def _run_key(ev: dict[str, Any]) -> tuple[Any, ...] | None:
    if ev.get("type") != "token" or ev.get("tool_call_chunks") or "index" not in ev:
        return None
    return tuple(sorted((k, repr(v)) for k, v in ev.items() if k not in _PER_TOKEN))


def compact(events: list[dict[str, Any]]) -> dict[str, Any]:
    """About 10 bytes per token plus its text (see the module docstring)."""
    segments: list[dict[str, Any]] = []
    run: dict[str, Any] | None = None
    run_key: tuple[Any, ...] | None = None
    for ev in events:
        key = _run_key(ev)
        if (
            key is not None
            and run is not None
            and key == run_key
            and ev["index"] == run["i"] + len(run["t"])
        ):
            run["t"].append(ev.get("token") or "")
            run["d"].append(int(round((float(ev.get("ts") or 0) - run["ts"]) * 10000)))
            continue
        if key is not None:
            run = {
                "r": {k: v for k, v in ev.items() if k not in _PER_TOKEN},
                "i": ev["index"],
                "t": [ev.get("token") or ""],
                "ts": float(ev.get("ts") or 0),
                "d": [0],
            }
            run_key = key
            segments.append(run)
        else:
            run, run_key = None, None
            segments.append({"e": ev})
    return {"v": VERSION, "s": segments}


def expand(batch: Any) -> list[dict[str, Any]]:
    """Inverse of :func:`compact`; a plain list of events passes through."""
    if isinstance(batch, list):
        return [e for e in batch if isinstance(e, dict)]
    if not isinstance(batch, dict) or batch.get("v") != VERSION:
        return [batch] if isinstance(batch, dict) else []
    out: list[dict[str, Any]] = []
    for seg in batch.get("s") or []:
        if "e" in seg:
            out.append(seg["e"])
            continue
        base, first, ts0 = seg["r"], seg["i"], seg["ts"]
        for n, (text, delta) in enumerate(zip(seg["t"], seg["d"], strict=True)):
            out.append(
                {
                    "type": "token",
                    **base,
                    "token": text,
                    "index": first + n,
                    "ts": ts0 + delta / 10000,
                }
            )
    return out


def count_tokens(events: Sequence[dict[str, Any]]) -> None:
    """Count token events handed to the Temporal path (the metric by transport)."""
    n = sum(1 for e in events if e.get("type") == "token")
    if n:
        _TOKENS_TEMPORAL.inc(n)


class TemporalPublishError(RuntimeError):
    """The Temporal path could not take a batch, retries included (the activity fails)."""


class TemporalBatcher:
    """Batches events for a publisher; owned by one handler, used on its event loop."""

    def __init__(
        self,
        publish: TemporalPublish,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = 0.05,
        max_batch: int = 256,
        retries: int = 5,
    ) -> None:
        self.publish = publish
        self.interval = interval
        self.max_batch = max_batch
        self.retries = retries
        self._loop = loop
        self._buffer: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._error: BaseException | None = None

    def add(self, events: list[dict[str, Any]]) -> None:
        """Queue events; a batch leaves within ``interval`` (at once when full)."""
        self._buffer.extend(events)
        if self._task is not None and not self._task.done():
            return  # the drain loop picks them up
        if len(self._buffer) >= self.max_batch:
            self._kick()
        elif self._timer is None:
            self._timer = self._loop.call_later(self.interval, self._kick)

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        while self._buffer:
            if self._error is not None:
                return
            batch = self._buffer[: self.max_batch]
            del self._buffer[: len(batch)]
            delay = 0.05
            for attempt in range(self.retries + 1):
                try:
                    await self.publish(batch)
                    metrics.TEMPORAL_BATCHES.inc()
                    count_tokens(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    if attempt >= self.retries:
                        logger.error("Temporal path publish failed for good: %r", exc)
                        self._error = exc
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            if self._buffer and len(self._buffer) < self.max_batch:
                # let more events accumulate up to the interval (bounded latency)
                await asyncio.sleep(self.interval)

    async def flush(self) -> None:
        """Send everything queued; raise :class:`TemporalPublishError` if it failed."""
        while True:
            if self._timer is not None or (
                self._buffer and (self._task is None or self._task.done())
            ):
                self._kick()
            task = self._task
            if task is not None and not task.done():
                await task
            if not self._buffer or self._error is not None:
                break
        if self._error is not None:
            raise TemporalPublishError(
                f"Temporal path token publish failed: {self._error!r}"
            ) from self._error


__all__ = [
    "TemporalBatcher",
    "TemporalPublish",
    "TemporalPublishError",
    "compact",
    "count_tokens",
    "expand",
]
