"""Resolve in-cluster Service names to local processes, for a process started by a test.

The local control plane has no pod network: a Redis "pod" is a redis-server on 127.0.0.1 and
a free port (see :mod:`tests.harness.redis_pods`). A process that must reach it by its
Service name (the operator's AUTH + PING of a Managed Redis) runs under this module, which
answers ``getaddrinfo("<svc>.<ns>.svc", 6379)`` from a JSON file (``{"host:port":
"127.0.0.1:port"}``, re-read at every look-up, so tests update it while the process runs);
other names resolve as usual.

    DEEPAGENT_TEST_HOSTS=hosts.json python -m tests.harness.service_dns deepagent_operator run ...
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import sys
from pathlib import Path
from typing import Any

HOSTS_ENV = "DEEPAGENT_TEST_HOSTS"
_real_getaddrinfo = socket.getaddrinfo


def read_hosts(path: str | os.PathLike[str]) -> dict[str, str]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_hosts(path: str | os.PathLike[str], hosts: dict[str, str]) -> None:
    """Replace the table atomically (a reader never sees half a file)."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(hosts))
    tmp.replace(path)


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    table = read_hosts(os.environ[HOSTS_ENV]) if os.environ.get(HOSTS_ENV) else {}
    target = table.get(f"{host}:{port}")
    if target is not None:
        host, _, port = target.rpartition(":")
        port = int(port)
    return _real_getaddrinfo(host, port, *args, **kwargs)


def install() -> None:
    socket.getaddrinfo = _getaddrinfo


if __name__ == "__main__":
    install()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
