"""What Redis may have lost: the recent events of each run written to Redis.

A Redis that dies (or restarts empty) takes acknowledged entries with it. The writer
keeps each run's recent events here so that, when the circuit opens, the run's events
written before the failure can be re-sent through the Temporal path; clients
de-duplicate, so a token that did survive is still delivered once.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from deepagent_temporal.contract import loads

Run = tuple[str, str]  # (workflow id, run id)


class ReplayWindow:
    """Bounded per-run memory of encoded events, tagged with the circuit generation.

    Bounds: the last ``window_seconds`` of a run's events (measured from its newest
    event, so an idle run keeps its tail), at most ``max_events_per_run`` per run,
    ``max_runs`` runs and ``max_events`` in total (least recently written runs go first).
    """

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        max_events_per_run: int = 10_000,
        max_runs: int = 256,
        max_events: int = 200_000,
    ) -> None:
        self.window_seconds = window_seconds
        self.max_events_per_run = max_events_per_run
        self.max_runs = max_runs
        self.max_events = max_events
        self.total = 0
        # run -> deque[(generation, monotonic time, encoded event)]: bytes, no GC pressure
        self._runs: OrderedDict[Run, deque] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def remember(self, run: Run, generation: int, data: bytes) -> None:
        runs = self._runs
        dq = runs.get(run)
        if dq is None:
            dq = runs[run] = deque(maxlen=self.max_events_per_run)
        else:
            runs.move_to_end(run)
        now = time.monotonic()
        full = len(dq) == dq.maxlen
        dq.append((generation, now, data))
        if not full:
            self.total += 1
        horizon = now - self.window_seconds
        while dq[0][1] < horizon:
            dq.popleft()
            self.total -= 1
        while (len(runs) > self.max_runs or self.total > self.max_events) and len(runs) > 1:
            _, old = runs.popitem(last=False)
            self.total -= len(old)

    def take(self, run: Run, generation: int, *, stale_only: bool = True) -> list[dict[str, Any]]:
        """Remove and return a run's events: all, or (``stale_only``) those written
        before ``generation`` (the current one), i.e. before Redis last failed."""
        dq = self._runs.get(run)
        if not dq:
            return []
        if not stale_only:
            out = [loads(e) for _, _, e in dq]
            self.total -= len(dq)
            dq.clear()
            return out
        out = []
        while dq and dq[0][0] < generation:
            out.append(loads(dq.popleft()[2]))
        self.total -= len(out)
        return out

    def forget(self, run: Run) -> None:
        dq = self._runs.pop(run, None)
        if dq:
            self.total -= len(dq)


__all__ = ["ReplayWindow"]
