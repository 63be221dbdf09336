"""Run ``deepagent-temporal worker`` as a child process (tests, demo, benchmarks)."""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from deepagent_temporal.devservers import ManagedProcess, free_port


class WorkerProcess:
    """``python -m deepagent_temporal worker`` with the env contract of ARCHITECTURE.md."""

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
        full_env = {
            "DEEPAGENT_GRAPH": graph,
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_TASK_QUEUE": task_queue,
            "DEEPAGENT_TOKEN_STREAMING": "true" if token_streaming else "false",
            "DEEPAGENT_HEALTH_PORT": str(self.health_port),
            "DEEPAGENT_HEALTH_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        if redis_url:
            full_env["REDIS_URL"] = redis_url
        full_env.update(env or {})
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="deepagent-worker-"))
        self.process = ManagedProcess(
            name, [sys.executable, "-m", "deepagent_temporal", "worker"], self.log_dir, env=full_env
        )
        if redis_url is None:
            # make sure an inherited REDIS_URL does not turn Phase 2 on
            assert self.process.env is not None
            self.process.env.pop("REDIS_URL", None)

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
