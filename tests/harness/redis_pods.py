"""A kubelet for Managed Redis: runs the redis-server of each Redis StatefulSet of a namespace.

kwok only marks pods Ready; this runs the real process behind each Managed Redis, from the
StatefulSet's pod template exactly as the kubelet would (command and args, the auth Secret
mounted as files, an empty data directory), on 127.0.0.1 and a free port, and maps the
Service name ``<name>-redis.<ns>.svc:6379`` to it in a :mod:`tests.harness.service_dns` table.
When the pod template changes (a new password rolls Redis) the process is replaced, as a
rolling update would. ``paused`` stops it from rolling (a pod that has not rolled yet).

    with RedisPods(kube, namespace, hosts_file, work_dir) as pods:
        ...
        pods.argv("coder-redis")     # what runs
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

from deepagent_temporal.dev.servers import ManagedProcess, free_port, port_open
from tests.harness.pods import container_argv, container_env, local_argv, mount_volumes
from tests.harness.service_dns import read_hosts, write_hosts

REDIS_PORT = 6379
SELECTOR = "app.kubernetes.io/managed-by=deepagent-operator,app.kubernetes.io/component=redis"


def _digest(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


class RedisPods:
    def __init__(self, kube: Any, namespace: str, hosts_file: Path, work_dir: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.hosts_file = Path(hosts_file)
        self.work_dir = Path(work_dir)
        self.paused = False
        #: StatefulSet name -> (template hash, process, argv)
        self.running: dict[str, tuple[str, ManagedProcess, list[str]]] = {}
        self.starts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RedisPods:
        self._thread = threading.Thread(target=self._loop, name="redis-pods", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for name in list(self.running):
                self._stop_pod(name)

    def argv(self, name: str) -> list[str]:
        with self._lock:
            return list(self.running[name][2])

    def rolled(self, name: str) -> bool:
        """True when the process of ``name`` runs the StatefulSet's current pod template."""
        sts = self.kube.get("StatefulSet", self.namespace, name)
        with self._lock:
            current = self.running.get(name)
            return (
                sts is not None
                and current is not None
                and current[1].running
                and current[0] == _digest(sts["spec"]["template"])
            )

    def pid(self, name: str) -> int:
        with self._lock:
            return self.running[name][1].pid

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep serving; the test's waits report
                print(f"[redis-pods] sync failed: {exc!r}")

    def sync(self) -> None:
        """Start, roll or stop processes to match the StatefulSets that exist now."""
        sets = {
            s["metadata"]["name"]: s
            for s in self.kube.list("StatefulSet", self.namespace, label_selector=SELECTOR)
            if not s["metadata"].get("deletionTimestamp")
        }
        with self._lock:
            for name in [n for n in self.running if n not in sets]:
                self._stop_pod(name)
            if self.paused:
                return
            for name, sts in sets.items():
                digest = _digest(sts["spec"]["template"])
                current = self.running.get(name)
                if current is not None and current[0] == digest and current[1].running:
                    continue
                if current is not None:
                    self._stop_pod(name)
                try:
                    self._start_pod(name, sts, digest)
                except LookupError:
                    pass  # its Secret is not there (yet, or any more): the kubelet waits too

    def _look_up(self, kind: str, name: str) -> dict[str, str]:
        obj = self.kube.get("Secret" if kind == "secret" else "ConfigMap", self.namespace, name)
        if obj is None:
            raise LookupError(f"{kind} {name} not found")  # the kubelet would wait too
        data = obj.get("data") or {}
        if kind == "secret":
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(data)

    def _start_pod(self, name: str, sts: dict[str, Any], digest: str) -> None:
        pod = sts["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        self.starts[name] = self.starts.get(name, 0) + 1
        root = self.work_dir / f"{name}-{self.starts[name]}"
        mounts = mount_volumes(pod, container, self._look_up, root)
        env = container_env(container, self._look_up)
        argv = local_argv(container_argv(container, env), mounts)
        port = free_port()
        # The pod's fixed port and its IP become a free port on the loopback interface.
        argv += ["--port", str(port), "--bind", "127.0.0.1"]
        process = ManagedProcess(f"{name}-{self.starts[name]}", argv, self.work_dir, env=env)
        process.start()
        process.wait_until(lambda: port_open(port), 30)
        self.running[name] = (digest, process, argv)
        hosts = read_hosts(self.hosts_file)
        hosts[f"{sts['spec']['serviceName']}.{self.namespace}.svc:{REDIS_PORT}"] = (
            f"127.0.0.1:{port}"
        )
        write_hosts(self.hosts_file, hosts)

    def _stop_pod(self, name: str) -> None:
        _digest, process, _argv = self.running.pop(name)
        process.stop(grace=2.0)
        hosts = read_hosts(self.hosts_file)
        hosts = {k: v for k, v in hosts.items() if not k.startswith(f"{name}.")}
        write_hosts(self.hosts_file, hosts)
        shutil.rmtree(self.work_dir / f"{name}-{self.starts[name]}", ignore_errors=True)
