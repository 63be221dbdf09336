"""Run the operator as a subprocess against a cluster (tests, benchmarks, local debugging).

Test harness, not product code: it lives under ``tests/`` so the operator package and image
carry none of it. (Not named ``operator.py``: that would shadow the stdlib module for any
script started from this directory.)

with OperatorProcess(kubeconfig, namespaces=["agents"]) as op:
    ...
    op.metrics()          # {"child_writes_total": 3.0, ...}
    op.restart()
    op.peak_rss_bytes()

With ``hosts_file`` the operator resolves in-cluster Service names through that table
(:mod:`tests.harness.service_dns`), e.g. to reach Managed Redis run by
:class:`tests.harness.redis_pods.RedisPods` for its AUTH + PING check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.harness.service_dns import HOSTS_ENV

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: str,
        namespaces: Sequence[str] = (),
        *,
        default_image: str | None = None,
        default_temporal_address: str | None = None,
        resync_seconds: float = 60.0,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_dir: str | None = None,
        hosts_file: str | os.PathLike[str] | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.namespaces = list(namespaces)
        self.default_image = default_image
        self.default_temporal_address = default_temporal_address
        self.resync_seconds = resync_seconds
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.hosts_file = hosts_file
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="deepagent-operator-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.metrics_port = 0
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "deepagent_operator", "run", "--standalone"]
        if self.hosts_file is not None:
            argv[2:3] = ["tests.harness.service_dns", "deepagent_operator"]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        if not self.namespaces:
            argv.append("--all-namespaces")
        argv += [
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
            "--resync-seconds",
            str(self.resync_seconds),
        ]
        if self.default_image:
            argv += ["--default-image", self.default_image]
        if self.default_temporal_address:
            argv += ["--default-temporal-address", self.default_temporal_address]
        return argv + self.extra_args

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        self.starts += 1
        self.health_port, self.metrics_port = free_port(), free_port()
        env = dict(os.environ)
        env.update(
            KUBECONFIG=self.kubeconfig,
            PYTHONUNBUFFERED="1",
            DEEPAGENT_DEFAULT_IMAGE="",
            DEEPAGENT_DEFAULT_TEMPORAL_ADDRESS="",
            DEEPAGENT_WATCH_NAMESPACES="",
        )
        if self.hosts_file is not None:
            env[HOSTS_ENV] = str(self.hosts_file)
        env.update(self.extra_env)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self._get(f"http://127.0.0.1:{self.health_port}/healthz") is not None and (
                self._get(f"http://127.0.0.1:{self.metrics_port}/metrics") is not None
            ):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"operator did not become healthy in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> OperatorProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _get(url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        text = self._get(f"http://127.0.0.1:{self.metrics_port}/metrics") or ""
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, val = line.rpartition(" ")
                out[key.removeprefix("deepagent_operator_")] = float(val)
        return out

    def peak_rss_bytes(self) -> int:
        """VmHWM of the running operator (Linux)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
