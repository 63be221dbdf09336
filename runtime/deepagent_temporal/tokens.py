"""Client side of ``astream(stream_mode="tokens")``: Temporal stream + Redis -> events.

The workflow stream carries graph lifecycle markers (topic ``graph``), Phase 1 token
batches and per-LLM-call summaries (topic ``tokens``); the Redis stream (Phase 2)
carries the tokens of LLM calls Redis was healthy for. The streaming helper's
``TokenStreamMerger`` de-duplicates and orders events from both paths; this module
feeds it and ends the stream with ``complete`` when the run ends (or pauses), after
every LLM call's tokens (counted by its durable summary) have arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from deepagent_temporal.activity import CUSTOM_TOPIC, GRAPH_TOPIC, TOKENS_TOPIC
from deepagent_temporal.delivery import TokenStreamMerger

#: how long the end of a run waits for tokens still in flight on the Redis path
END_GRACE_SECONDS = 10.0
#: how long a gap in a call's token indexes may stay open before it is skipped
GAP_TIMEOUT_SECONDS = 10.0


async def merge_token_stream(
    temporal_items: AsyncIterator[Any],
    *,
    workflow_id: str,
    run_id: str | None,
    redis_backend: Any = None,
    graph_modes: list[str] | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ``("tokens", event)`` (and graph-mode chunks) until the run ends."""
    graph_modes = list(graph_modes or [])
    merger = TokenStreamMerger(gap_timeout=GAP_TIMEOUT_SECONDS)
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump_temporal() -> None:
        try:
            async for item in temporal_items:
                queue.put_nowait(("temporal", item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - forwarded to the consumer
            queue.put_nowait(("error", exc))
        finally:
            queue.put_nowait(("temporal_done", None))

    async def pump_redis() -> None:
        if redis_backend is None or run_id is None:
            return
        with contextlib.suppress(Exception):
            async for ev in redis_backend.subscribe(workflow_id, run_id, stop_on_complete=True):
                queue.put_nowait(("redis", ev))

    tasks = [asyncio.create_task(pump_temporal()), asyncio.create_task(pump_redis())]
    ending_deadline: float | None = None
    tick = 0.05
    try:
        while True:
            if ending_deadline is not None and (
                merger.waiting == 0 or time.monotonic() >= ending_deadline
            ):
                break
            try:
                source, payload = await asyncio.wait_for(
                    queue.get(), tick if (merger.waiting or ending_deadline) else None
                )
            except TimeoutError:
                for ev in merger.flush_stale():
                    yield "tokens", ev
                continue
            if source == "error":
                raise payload
            if source == "temporal_done":
                if ending_deadline is None:
                    ending_deadline = time.monotonic() + END_GRACE_SECONDS
                continue
            if source == "redis":
                if payload.get("type") == "complete":
                    continue  # the end of the run is decided by the durable path
                for ev in merger.push(payload):
                    yield "tokens", ev
                continue
            topic, data = payload.topic, payload.data
            if topic == TOKENS_TOPIC:
                for raw in data if isinstance(data, list) else [data]:
                    if isinstance(raw, dict) and raw.get("type") != "complete":
                        for ev in merger.push(raw):
                            yield "tokens", ev
            elif topic == CUSTOM_TOPIC:
                if "custom" in graph_modes:
                    yield "custom", data
            elif topic == GRAPH_TOPIC and isinstance(data, dict):
                kind = data.get("kind")
                if kind in ("end", "pause", "error"):
                    if ending_deadline is None:
                        ending_deadline = time.monotonic() + END_GRACE_SECONDS
                elif kind in graph_modes:
                    yield kind, data.get("data")
        for ev in merger.finish():
            yield "tokens", ev
        for ev in merger.push({"type": "complete", "token": ""}):
            yield "tokens", ev
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
