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
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from deepagent_temporal.client.delivery import SOURCE_DONE, TokenStreamMerger, fan_in, quiet
from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    GRAPH_TOPIC,
    LLM_RECORD,
    REDIS,
    RUN_ENDING_MARKERS,
    RUN_TOPIC,
    TOKENS_TOPIC,
)
from deepagent_temporal.transport.temporal import expand

#: how long the end of a segment waits for tokens still in flight on the Redis path
END_GRACE_SECONDS = 10.0
#: how long a call's durable record waits for the call's Redis tokens before the missing
#: part is delivered from the record (unless the Redis reader caught up earlier)
RECORD_GRACE_SECONDS = 3.0

logger = logging.getLogger(__name__)


def _call_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (ev.get("task_id") or ev.get("node"), int(ev.get("attempt") or 1), ev.get("llm_call"))


async def merge_token_stream(
    temporal_items: AsyncIterator[Any],
    *,
    workflow_id: str,
    run_id: str | None,
    redis_backend: Any = None,
    graph_modes: list[str] | None = None,
    start_segment: int = 0,
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ``("tokens", event)`` (and graph-mode chunks) until the segment ends.

    Events of earlier segments (before the resume this stream starts at) are skipped on
    both paths. A call whose tokens Redis lost (trimmed, expired, restarted empty) or
    this client cannot read (no Redis configured) is completed from its durable record
    as a ``snapshot`` event.
    """
    graph_modes = list(graph_modes or [])
    merger = TokenStreamMerger(gap_timeout=math.inf)  # gaps close by record, not by time
    open_calls: set[tuple[Any, ...]] = set()
    records: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
    redis_complete_seen = False
    redis_idle_at = -math.inf
    warned_no_redis = False

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

    def current(ev: dict[str, Any]) -> bool:
        return int(ev.get("segment") or 0) >= start_segment

    def push(ev: dict[str, Any]) -> list[dict[str, Any]]:
        out = merger.push(ev)
        for delivered in out:
            track(delivered)
        return out

    def settle(force: bool) -> list[dict[str, Any]]:
        """Apply the records whose Redis tokens can no longer arrive."""
        out: list[dict[str, Any]] = []
        now = time.monotonic()
        for key, (arrived, record) in list(records.items()):
            if (
                force
                or redis_backend is None
                or redis_complete_seen
                or redis_idle_at > arrived
                or now - arrived >= RECORD_GRACE_SECONDS
            ):
                del records[key]
                for delivered in merger.settle(record):
                    track(delivered)
                    out.append(delivered)
        return out

    def on_redis_idle() -> None:
        nonlocal redis_idle_at
        redis_idle_at = time.monotonic()

    sources: dict[str, AsyncIterator[Any]] = {"temporal": temporal_items}
    if redis_backend is not None and run_id is not None:
        sources["redis"] = quiet(
            redis_backend.subscribe(
                workflow_id, run_id, stop_on_complete=False, on_idle=on_redis_idle
            )
        )
    ending_deadline: float | None = None
    async with fan_in(sources) as queue:
        while True:
            for ev in settle(force=False):
                yield "tokens", ev
            # The segment is over once every call is accounted for: the durable records of
            # all its calls precede the end marker, so a lost Redis `complete` entry
            # costs nothing (the records settle what Redis did not deliver).
            if ending_deadline is not None and (
                (merger.waiting == 0 and not open_calls and not records)
                or time.monotonic() >= ending_deadline
            ):
                break
            try:
                source, payload = await asyncio.wait_for(
                    queue.get(),
                    0.05 if (merger.waiting or ending_deadline or records) else None,
                )
            except TimeoutError:
                continue
            if payload is SOURCE_DONE:
                if source == "temporal" and ending_deadline is None:
                    ending_deadline = time.monotonic() + END_GRACE_SECONDS
                continue
            if isinstance(payload, BaseException):
                raise payload
            if source == "redis":
                if not current(payload):
                    continue
                if payload.get("type") == "complete":
                    redis_complete_seen = True
                    continue  # the end of the segment is decided by the durable path
                for ev in push(payload):
                    yield "tokens", ev
                continue
            topic, data = payload.topic, payload.data
            if topic == TOKENS_TOPIC:
                for raw in expand(data):
                    kind = raw.get("type")
                    if kind == "complete" or not current(raw):
                        continue
                    if kind == LLM_RECORD:
                        if raw.get("transport") == REDIS and redis_backend is None:
                            if not warned_no_redis:
                                warned_no_redis = True
                                logger.warning(
                                    "run %s streams its tokens through Redis, but this client "
                                    "has no Redis: each LLM call arrives whole when it ends "
                                    "(`snapshot` events). Pass redis_stream_backend="
                                    "RedisStreamBackend(<the workers' Redis URL>) for live tokens.",
                                    workflow_id,
                                )
                        records[_call_key(raw)] = (time.monotonic(), raw)
                        continue
                    for ev in push(raw):
                        yield "tokens", ev
            elif topic == CUSTOM_TOPIC:
                if "custom" in graph_modes:
                    yield "custom", data
            elif topic == RUN_TOPIC and isinstance(data, dict):
                if (
                    data.get("kind") in RUN_ENDING_MARKERS
                    and ending_deadline is None
                    and current(data)
                ):
                    ending_deadline = time.monotonic() + END_GRACE_SECONDS
            elif topic == GRAPH_TOPIC and isinstance(data, dict):
                if data.get("kind") in graph_modes:
                    yield data["kind"], data.get("data")
        for ev in settle(force=True):
            yield "tokens", ev
        for ev in merger.finish():
            yield "tokens", ev
        for ev in merger.push({"type": "complete", "token": ""}):
            yield "tokens", ev
