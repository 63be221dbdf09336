"""The Event Histories of a run's continue-as-new chain (tests and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.api.history.v1 import History


@dataclass(frozen=True)
class RunHistory:
    """One run of a chain: its id, Event History size in bytes and event count."""

    run_id: str
    size_bytes: int
    events: int
    continued: bool


async def chain_histories(client: Any, workflow_id: str) -> list[RunHistory]:
    """Every run of the chain of ``workflow_id``, first to last (the payloads as stored:
    references where payload storage took them)."""
    from deepagent_temporal.contract import GET_STATE_QUERY, RunState

    latest = client.get_workflow_handle(workflow_id)
    state = await latest.query(GET_STATE_QUERY, result_type=RunState)
    run_id: str | None = state.stream_run_id  # the chain's first run
    runs: list[RunHistory] = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        events = list(history.events)
        last = events[-1] if events else None
        next_run = None
        if last is not None and last.HasField(
            "workflow_execution_continued_as_new_event_attributes"
        ):
            next_run = (
                last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            )
        size = History(events=events).ByteSize()
        runs.append(RunHistory(run_id, size, len(events), next_run is not None))
        run_id = next_run
    return runs
