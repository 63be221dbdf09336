"""Reading a run's workflow stream: the durable path of every stream mode.

The stream lives in the workflow (``temporalio.contrib.workflow_streams``); this reads it
with a history-lean long poll, survives worker outages, honours a deadline, and turns
its items into the (mode, chunk) pairs of ``astream``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.contrib.workflow_streams import PollInput, PollResult
from temporalio.service import RPCError, RPCStatusCode

from deepagent_temporal.contract import (
    CUSTOM_TOPIC,
    GRAPH_TOPIC,
    RUN_ENDING_MARKERS,
    RUN_PAUSE,
    RUN_TOPIC,
)

_STREAM_POLL = "__temporal_workflow_stream_poll"
#: a topic nothing is published to: stream long-polls only wake the client up
_WAKE_TOPIC = "__wake__"


class RunNotFoundError(LookupError):
    """The thread has no run (never started, or its workflow is gone)."""


class StreamTimeoutError(TimeoutError):
    """``astream`` reached its ``timeout``; the run itself goes on (join it again)."""


class RunStreamReader:
    """Workflow-stream items of runs, for one client."""

    def __init__(self, client: Client, poll_interval: timedelta) -> None:
        self.client = client
        self.poll_interval = poll_interval

    async def items(
        self, handle: WorkflowHandle, topics: list[str], from_offset: int, deadline: float | None
    ) -> AsyncIterator[Any]:
        """Workflow stream items (``WorkflowStreamItem``) from ``from_offset`` on.

        History-lean variant of ``WorkflowStreamClient.subscribe``: the long-poll
        *update* (recorded in Event History) asks for a topic nobody publishes to, so it
        only wakes us up when something was published and its result is empty; the items
        themselves are read with the stream's poll *query* (not recorded). Token batches
        and graph values therefore enter history once (the publishing signal), not twice.

        Survives worker outages (while no worker polls the task queue, updates and
        queries fail): retries for as long as the run is open, until ``deadline``. After the
        run closes, drains what is left with queries, then ends. A run that vanishes
        raises :class:`RunNotFoundError` at once.
        """
        offset = from_offset
        failures = 0
        closed = False
        while True:
            try:
                if not closed:
                    await _until(
                        deadline,
                        handle.id,
                        handle.execute_update(
                            _STREAM_POLL,
                            PollInput(topics=[_WAKE_TOPIC], from_offset=offset),
                            result_type=PollResult,
                        ),
                    )
                more = True
                while more:
                    result: PollResult = await handle.query(
                        _STREAM_POLL,
                        PollInput(topics=topics, from_offset=offset),
                        result_type=PollResult,
                    )
                    for item in self._decode_items(result):
                        yield item
                    offset = max(offset, result.next_offset)
                    more = result.more_ready
                failures = 0
                if closed:
                    return
                await asyncio.sleep(self.poll_interval.total_seconds())
            except WorkflowUpdateFailedError as err:
                _reraise_cancellation()
                cause_type = getattr(err.cause, "type", None)
                if cause_type == "TruncatedOffset":
                    offset = 0
                    continue
                # StreamDraining: the run is closing; read the rest once it has closed
                closed = await self._is_closed(handle, failures)
                failures += 1
                await asyncio.sleep(min(0.05 * failures, 1.0))
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowQueryFailedError):
                _reraise_cancellation()
                failures += 1
                closed = await self._is_closed(handle, failures)
                if closed and failures > 20:
                    raise
                await _until(deadline, handle.id, asyncio.sleep(min(0.1 * failures, 1.0)))

    async def _is_closed(self, handle: WorkflowHandle, failures: int) -> bool:
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(
                    f"run {handle.id!r} vanished while streaming (deleted or past retention)"
                ) from exc
            return False  # Temporal unreachable: keep trying until the deadline
        return desc.status is not None and desc.status.name != "RUNNING"

    def _decode_items(self, result: PollResult) -> list[Any]:
        from temporalio.contrib.workflow_streams import WorkflowStreamItem
        from temporalio.contrib.workflow_streams._types import _decode_payload

        converter = self.client.data_converter.payload_converter
        return [
            WorkflowStreamItem(
                topic=wire.topic,
                data=converter.from_payload(_decode_payload(wire.data)),
                offset=wire.offset,
            )
            for wire in result.items
        ]


def _reraise_cancellation() -> None:
    """Temporal's client turns a cancelled RPC into its own error: when our task is being
    cancelled (the consumer left, the loop closes), honour the cancellation instead of
    retrying, or the poll would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _until(deadline: float | None, run: str, aw: Any) -> Any:
    """Await ``aw``, raising :class:`StreamTimeoutError` at ``deadline``."""
    if deadline is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        raise StreamTimeoutError(
            f"run {run!r} is still going after the stream's timeout; the run continues: "
            "join it again with astream(None, config)"
        ) from None


async def graph_events(
    items: AsyncIterator[Any], modes: list[str], segment: int = 0
) -> AsyncIterator[tuple[str, Any]]:
    """Graph-topic events of a run segment until it ends, pauses or fails."""
    async for item in items:
        data = item.data
        if item.topic == CUSTOM_TOPIC:
            yield "custom", data
            continue
        if item.topic not in (GRAPH_TOPIC, RUN_TOPIC) or not isinstance(data, dict):
            continue
        kind = data.get("kind")
        if item.topic == RUN_TOPIC and int(data.get("segment") or 0) < segment:
            continue  # a marker of an earlier segment (a joiner reads from its start)
        if item.topic == RUN_TOPIC and kind in RUN_ENDING_MARKERS:
            if kind == RUN_PAUSE and "updates" in modes:
                yield "updates", {"__interrupt__": tuple(data["data"]["interrupts"])}
            return
        if kind in modes:
            yield kind, data.get("data")
