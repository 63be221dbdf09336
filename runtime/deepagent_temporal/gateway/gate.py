"""The Redis path waits for the Temporal path at the start of each LLM call.

The graph events that come before a node's model call in LangGraph's order (the
``values`` of the step before, the ``updates`` of earlier nodes) were published to the
workflow stream before the node's activity was even scheduled; but a Redis token
travels one hop and a workflow-stream item two (a wake-up update, then a query), so the
first tokens of a call can overtake them. The reference server never shows a call's
tokens before the ``values`` of the step before it; neither do we:

when a Redis entry starts an LLM call this stream has not seen, the Redis entries from
it on wait (not consumed: the cursor's Redis id stays before them) until the Temporal
path has been read as far as the workflow stream went when the call's node was
scheduled: the call's ``llm_start`` says how far (``stream_offset``), so no request is
made. (Events of workers that do not stamp it: the gateway asks the workflow how far its
stream goes, one query.) Everything published before the node was scheduled is then
shown first. Items of that range published later (the call's own durable record, hence
its node's ``updates``) release the wait at once, so they still come after its tokens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from deepagent_temporal.gateway.cursor import call_hash

#: the workflow stream's offset query (temporalio.contrib.workflow_streams)
OFFSET_QUERY = "__temporal_workflow_stream_offset"
_ASKING = -2
_OPEN = -1

Entry = tuple[str, list[dict[str, Any]]]  # (Redis entry id, its events)


class RedisGate:
    """Redis entries held behind the Temporal path (see the module docstring)."""

    def __init__(self, current: Callable[[dict[str, Any]], bool]) -> None:
        self.current = current
        self.backlog: deque[Entry] = deque()
        #: calls that never wait again (passed the gate, or seen on another path)
        self.known: set[str] = set()
        #: the head entry waits for this offset (None: it is not checked yet)
        self.wait_for: int | None = None

    def know(self, ev: dict[str, Any]) -> None:
        if ev.get("type") == "llm_start":
            self.known.add(call_hash(ev))

    def add(self, entry_id: str, events: list[dict[str, Any]]) -> None:
        self.backlog.append((entry_id, events))

    def ready(self, consumed: int) -> tuple[list[Entry], bool]:
        """Entries that may go now, and whether to ask the workflow for its offset
        (then call :meth:`answer` with it)."""
        out: list[Entry] = []
        while self.backlog:
            if self.wait_for is None:
                starts = {
                    call_hash(ev): ev.get("stream_offset")
                    for ev in self.backlog[0][1]
                    if ev.get("type") == "llm_start" and self.current(ev)
                }
                new = starts.keys() - self.known
                if new:
                    self.known |= new
                    stamped = [starts[h] for h in new]
                    if not all(type(o) is int for o in stamped):  # unstamped: ask
                        self.wait_for = _ASKING
                        return out, True
                    self.wait_for = max(stamped)
                    continue
            elif self.wait_for == _ASKING or consumed < self.wait_for:
                return out, False
            self.wait_for = None
            out.append(self.backlog.popleft())
        return out, False

    def answer(self, offset: int) -> None:
        """The workflow's stream offset when asked (``-1``: release the wait)."""
        if self.wait_for == _ASKING:
            self.wait_for = offset

    def release_for(self, item_events: list[dict[str, Any]]) -> None:
        """A Temporal item with these events arrives: a durable record of a waiting call
        is published after it ended, so the wait ends before the record is shown."""
        if self.wait_for is None or not self.backlog:
            return
        waiting = {call_hash(ev) for _, evs in self.backlog for ev in evs}
        if any(call_hash(ev) in waiting for ev in item_events):
            self.wait_for = _OPEN

    def drain(self) -> list[Entry]:
        """Everything held, in order (the stream ends)."""
        out = list(self.backlog)
        self.backlog.clear()
        self.wait_for = None
        return out
