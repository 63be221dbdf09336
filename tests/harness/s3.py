"""Session fixture: a real S3-compatible server (SeaweedFS, Apache-2.0) on loopback.

``weed`` comes from ``tests/tools/build-seaweedfs.sh`` (built from its Go module once,
then cached), or from ``SEAWEEDFS_WEED`` (a path to a ``weed`` binary). The server
requires signed requests (one identity, :data:`ACCESS_KEY` / :data:`SECRET_KEY`), so the
tests exercise the payload storage's request signing for real.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.dev.servers import LOOPBACK, ManagedProcess, free_port
from tests.harness._logs import report_on_failure

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "tools" / "build-seaweedfs.sh"
BUILD_TIMEOUT = 1800
ACCESS_KEY = "deepagent-test"
SECRET_KEY = "deepagent-test-secret"
WEED_ENV = "SEAWEEDFS_WEED"  # not a worker variable: the tests' own


def find_weed() -> str:
    """The ``weed`` binary: ``$SEAWEEDFS_WEED``, else the cached build (built if needed)."""
    if os.environ.get(WEED_ENV):
        return os.environ[WEED_ENV]
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--cached-only"], capture_output=True, text=True
    )
    if proc.returncode == 2:
        sys.stderr.write(f"[s3 harness] running {BUILD_SCRIPT.name} (cached after first build)\n")
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    return str(Path(proc.stdout.strip().splitlines()[-1]) / "weed")


def _run(coro):
    """Run ``coro`` to completion on a loop of its own (callers may be inside a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class SeaweedFS:
    """``weed server -s3``: master, volume, filer and S3 gateway in one process, every
    port a free one on 127.0.0.1, data in a temp dir."""

    name = "seaweedfs"

    def __init__(self, log_dir: str | Path | None = None, weed: str | None = None) -> None:
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="deepagent-seaweedfs-"))
        self.data_dir = self.log_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.log_dir / "s3.json"
        identity = {
            "name": "deepagent",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "metricsPort",
            )
        }
        args = [
            weed or find_weed(),
            "server",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-dir={self.data_dir}",
            "-s3",
            f"-s3.port={self.port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            # every bucket is a collection that grows several volumes: room for many
            "-master.volumeSizeLimitMB=1024",
            "-volume.max=200",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        self.process = ManagedProcess(self.name, args, self.log_dir)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, bucket: str = "", prefix: str = ""):
        from deepagent_temporal.s3 import S3Location, SigV4S3Client

        location = S3Location(bucket=bucket, endpoint=self.endpoint, prefix=prefix)
        return SigV4S3Client(location, ACCESS_KEY, SECRET_KEY)

    async def _bucket_ready(self, bucket: str) -> bool:
        client = self.client(bucket)
        try:
            await client.create_bucket(bucket)
            await client.put_object(bucket=bucket, key=".ready", data=b"1")
            return await client.object_exists(bucket=bucket, key=".ready")
        except Exception:  # noqa: BLE001 - not up yet
            return False
        finally:
            await client.aclose()

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket (``name`` or a random one); waits until it takes objects."""
        bucket = name or f"payloads-{uuid.uuid4().hex[:10]}"
        self.process.wait_until(lambda: _run(self._bucket_ready(bucket)), 120)
        return bucket

    def env(self, bucket: str, **fields: object) -> dict[str, str]:
        """A worker's (or client's) payload storage variables for ``bucket``."""
        return WorkerEnv.render(
            payload_s3_bucket=bucket,
            payload_s3_endpoint=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            **fields,
        )

    def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """``(objects, bytes)`` in ``bucket`` under ``prefix``."""
        client = self.client(bucket)

        async def usage() -> tuple[int, int]:
            try:
                return await client.usage(bucket, prefix)
            finally:
                await client.aclose()

        return _run(usage())

    def objects(self, bucket: str) -> int:
        """How many objects ``bucket`` holds."""
        return self.usage(bucket)[0]

    def start(self) -> SeaweedFS:
        self.process.start()
        self.create_bucket("ready-check")
        return self

    def stop(self) -> None:
        # weed takes its time on SIGTERM (it flushes volumes); nothing here needs keeping
        self.process.stop(grace=3)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, request):
    server = SeaweedFS(log_dir=tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    report_on_failure(request.session.testsfailed > 0, [server.process])
    server.stop()
