"""Polling with a deadline, for state that other processes (controllers, kwok) converge."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    what: str,
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.25,
    logs: Callable[[], str] = lambda: "",
) -> Any:
    """Return the first truthy value of ``predicate``; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last value: {last!r})\n{logs()}"
    )
