"""Print service logs when a test session fails, so CI output shows why."""

from __future__ import annotations

from deepagent_temporal.dev.servers import ManagedProcess


def report_on_failure(session_failed: bool, processes: list[ManagedProcess]) -> None:
    if not session_failed:
        return
    for proc in processes:
        print(f"\n----- {proc.name} log ({proc.log_path}) -----\n{proc.log_tail(60)}")
