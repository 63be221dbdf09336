"""Client side of ``astream(stream_mode="tokens")``: Temporal stream + Redis -> events.

The workflow stream carries run lifecycle markers (topic ``run``), graph chunks (topic
``graph``) and the token batches of the Temporal path (topic ``tokens``); the Redis
stream carries the tokens of LLM calls Redis was healthy for, and ends with a
``complete`` entry written before the run's ``end`` marker. :class:`TokenStreamMerger`
de-duplicates and orders events from both paths.

When the run ends (or pauses), the stream is closed only once nothing can still be in
flight: every LLM call that started has ended, and - if the worker wrote the Redis
``complete`` entry - that entry was read (Redis streams are FIFO, so every Redis-carried
token of the run was read before it). Both waits are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from deepagent_temporal.client.delivery import SOURCE_DONE, TokenStreamMerger, fan_in
from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    GRAPH_TOPIC,
    RUN_ENDING_MARKERS,
    RUN_TOPIC,
    TOKENS_TOPIC,
)
from deepagent_temporal.transport.temporal import expand

#: how long the end of a run waits for tokens still in flight on the Redis path
END_GRACE_SECONDS = 10.0
#: how long a gap in a call's token indexes may stay open before it is skipped
GAP_TIMEOUT_SECONDS = 10.0


def _call_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (ev.get("task_id") or ev.get("node"), int(ev.get("attempt") or 1), ev.get("llm_call"))


async def _quiet(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The Redis path is best effort here: the Temporal path decides how the run ends."""
    with contextlib.suppress(Exception):
        async for ev in events:
            yield ev


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
    open_calls: set[tuple[Any, ...]] = set()
    redis_complete_seen = False

    def track(ev: dict[str, Any]) -> None:
        t = ev.get("type")
        if t == "llm_start":
            open_calls.add(_call_key(ev))
        elif t == "llm_end":
            open_calls.discard(_call_key(ev))
        elif t == "reset":
            scope, attempt = ev.get("task_id") or ev.get("node"), int(ev.get("attempt") or 1)
            for key in [k for k in open_calls if k[0] == scope and k[1] <= attempt]:
                open_calls.discard(key)

    def push(ev: dict[str, Any]) -> list[dict[str, Any]]:
        out = merger.push(ev)
        for delivered in out:
            track(delivered)
        return out

    sources: dict[str, AsyncIterator[Any]] = {"temporal": temporal_items}
    if redis_backend is not None and run_id is not None:
        sources["redis"] = _quiet(
            redis_backend.subscribe(workflow_id, run_id, stop_on_complete=True)
        )
    ending_deadline: float | None = None
    need_redis_complete = False
    async with fan_in(sources) as queue:
        while True:
            if ending_deadline is not None and (
                (
                    merger.waiting == 0
                    and not open_calls
                    and (redis_complete_seen or not need_redis_complete)
                )
                or time.monotonic() >= ending_deadline
            ):
                break
            try:
                source, payload = await asyncio.wait_for(
                    queue.get(), 0.05 if (merger.waiting or ending_deadline) else None
                )
            except TimeoutError:
                for ev in merger.flush_stale():
                    track(ev)
                    yield "tokens", ev
                continue
            if payload is SOURCE_DONE:
                if source == "temporal" and ending_deadline is None:
                    ending_deadline = time.monotonic() + END_GRACE_SECONDS
                continue
            if isinstance(payload, BaseException):
                raise payload
            if source == "redis":
                if payload.get("type") == "complete":
                    redis_complete_seen = True
                    continue  # the end of the run is decided by the durable path
                for ev in push(payload):
                    yield "tokens", ev
                continue
            topic, data = payload.topic, payload.data
            if topic == TOKENS_TOPIC:
                for raw in expand(data):
                    if raw.get("type") != "complete":
                        for ev in push(raw):
                            yield "tokens", ev
            elif topic == CUSTOM_TOPIC:
                if "custom" in graph_modes:
                    yield "custom", data
            elif topic == RUN_TOPIC and isinstance(data, dict):
                if data.get("kind") in RUN_ENDING_MARKERS and ending_deadline is None:
                    ending_deadline = time.monotonic() + END_GRACE_SECONDS
                    need_redis_complete = bool(data.get("redis_complete")) and (
                        redis_backend is not None
                    )
            elif topic == GRAPH_TOPIC and isinstance(data, dict):
                if data.get("kind") in graph_modes:
                    yield data["kind"], data.get("data")
        for ev in merger.finish():
            yield "tokens", ev
        for ev in merger.push({"type": "complete", "token": ""}):
            yield "tokens", ev
