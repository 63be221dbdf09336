"""Run ``deepagent-temporal worker`` as a child process (tests, demo, benchmarks)."""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.dev.servers import ManagedProcess, free_port


class WorkerProcess:
    """``python -m deepagent_temporal worker``, configured through :class:`WorkerEnv`."""

    def __init__(
        self,
        graph: str,
        temporal_address: str,
        task_queue: str,
        *,
        redis_url: str | None = None,
        token_streaming: bool = True,
        log_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        name: str = "worker",
    ) -> None:
        self.health_port = free_port()
        self.task_queue = task_queue
        full_env = WorkerEnv.render(
            graph=graph,
            temporal_address=temporal_address,
            temporal_namespace="default",
            temporal_task_queue=task_queue,
            token_streaming=token_streaming,
            health_port=self.health_port,
            health_host="127.0.0.1",
            redis_url=redis_url or None,
        )
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="deepagent-worker-"))
        self.process = ManagedProcess(
            name, [sys.executable, "-m", "deepagent_temporal", "worker"], self.log_dir, env=full_env
        )
        if redis_url is None:
            # make sure an inherited Redis URL does not turn the Redis path on
            assert self.process.env is not None
            self.process.env.pop(WorkerEnv.name("redis_url"), None)

    def readyz(self) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def _ready(self) -> bool:
        try:
            return self.readyz()[0] == 200
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        self.process.start()
        self.process.wait_until(self._ready, timeout)
        return self

    def stop(self, grace: float = 30.0) -> None:
        self.process.stop(grace=grace)

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
