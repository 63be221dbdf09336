"""Operator benchmark (part of `make bench`): latency, throughput and memory of the operator.

Measures, against a real API server (the local control plane from tests/harness/k8s.py,
or an existing cluster with USE_EXISTING_CLUSTER=1 and KUBECONFIG):

* p50 / p90 time from `kubectl apply` of a DeepAgent to its worker Deployment existing;
* time for 100 DeepAgents created at once to all reach phase Ready (kwok makes pods Ready);
* peak RSS (VmHWM) of the operator process;
* scale: 1,000 DeepAgents created at once (a fresh operator): all Ready, peak RSS, the API
  requests per agent at steady state (a window that includes a full resync), and the
  operator's per-agent state after all of them are deleted again.

Prints a markdown table with the targets (p50 <= 1 s, 100 CRs <= 30 s, RSS <= 200 MB;
1,000 CRs <= 60 s, RSS <= 300 MB, 0 writes at steady state, no state left).
Environment: BENCH_OPERATOR_APPLIES (default 20), BENCH_OPERATOR_AGENTS (default 100),
BENCH_OPERATOR_SCALE_AGENTS (default 1000; 0 skips the scale rows).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config, watch  # noqa: E402

from deepagent_operator.kube import Kube  # noqa: E402
from tests.harness.operator_process import OperatorProcess  # noqa: E402

APPLIES = int(os.environ.get("BENCH_OPERATOR_APPLIES", "20"))
AGENTS = int(os.environ.get("BENCH_OPERATOR_AGENTS", "100"))
SCALE = int(os.environ.get("BENCH_OPERATOR_SCALE_AGENTS", "1000"))
SCALE_RESYNC = 20.0
CRD = ROOT / "crds" / "deepagent.yaml"


@contextmanager
def cluster():
    """(kubeconfig, kubectl) of an existing cluster or a freshly started local one."""
    from tests.harness import k8s as harness

    kubectl = harness._find_kubectl()
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes"):
        kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        yield kubeconfig, kubectl, f"existing cluster ({kubeconfig})"
        return

    plane = harness.LocalControlPlane(harness._resolve_binaries(), kubectl)
    try:
        plane.start()
        yield (
            str(plane.kubeconfig),
            kubectl,
            "local kube-apiserver + kwok; kube-controller-manager "
            + " ".join(harness.CONTROLLER_MANAGER_TUNING),
        )
    finally:
        plane.stop()
        shutil.rmtree(plane.work, ignore_errors=True)


def _wait_established(api: client.ApiClient, timeout: float = 60) -> None:
    """(Not ``kubectl wait``: it fails while a new CRD has no conditions yet.)"""
    crds = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = crds.read_custom_resource_definition("deepagents.deepagent.dev")
        conditions = (crd.status and crd.status.conditions) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError("the DeepAgent CRD was not Established in time")


def agent(ns: str, name: str) -> dict:
    return {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"graph": "bench.agent:graph", "replicas": 1},
    }


class DeploymentWatcher:
    """Records when each Deployment in a namespace is first seen (watch stream)."""

    def __init__(self, api: client.ApiClient, ns: str):
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._w = watch.Watch()
        self._t = threading.Thread(target=self._run, args=(api, ns), daemon=True)
        self._t.start()

    def _run(self, api: client.ApiClient, ns: str) -> None:
        apps = client.AppsV1Api(api)
        try:
            for ev in self._w.stream(apps.list_namespaced_deployment, ns, timeout_seconds=3600):
                name = ev["object"].metadata.name
                with self._cond:
                    self.seen.setdefault(name, time.monotonic())
                    self._cond.notify_all()
        except Exception:  # the stream ends with a protocol error when stopped
            pass

    def wait(self, name: str, timeout: float = 30) -> float:
        with self._cond:
            self._cond.wait_for(lambda: name in self.seen, timeout)
            return self.seen[name]

    def stop(self) -> None:
        self._w.stop()


def _count_phase(kube: Kube, ns: str, phase: str) -> int:
    return sum(
        1 for a in kube.list("DeepAgent", ns) if (a.get("status") or {}).get("phase") == phase
    )


class CountWatcher:
    """Counts the objects of one kind in a namespace that pass ``test`` (a raw watch stream:
    the bench's own polling of 1,000 objects would load the API server it measures), and
    records when that count first reached each value."""

    def __init__(self, kube: Kube, kind: str, ns: str, test) -> None:
        self.passing: set[str] = set()
        self.reached: dict[int, float] = {}
        self._test, self._stop = test, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(kube, kind, ns), daemon=True)
        self._thread.start()

    def _run(self, kube: Kube, kind: str, ns: str) -> None:
        path = kube.path(kind, ns) + "?watch=true&timeoutSeconds=3600"
        m, url, hdrs, _body, _post = kube.api.param_serialize(
            method="GET", resource_path=path, auth_settings=["BearerToken"]
        )
        resp = kube.api.call_api(m, url, header_params=hdrs)
        buf = b""
        for chunk in resp.response.stream(64 * 1024):
            if self._stop.is_set():
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self._on(json.loads(line))

    def _on(self, event: dict) -> None:
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if event.get("type") != "DELETED" and self._test(obj):
            self.passing.add(name)
        else:
            self.passing.discard(name)
        self.reached.setdefault(len(self.passing), time.monotonic())

    def stop(self) -> None:
        self._stop.set()


def _requests(op: OperatorProcess) -> tuple[float, float]:
    """(writes, reads) the operator made so far."""
    writes = reads = 0.0
    for key, value in op.metrics().items():
        if key.startswith("api_requests_by_total"):
            if 'method="GET"' in key:
                reads += value
            else:
                writes += value
    return writes, reads


def scale(kubeconfig: str, kc, api) -> dict:
    """SCALE DeepAgents at once with a fresh operator: Ready, memory, steady state, cleanup."""
    from tests.harness import k8s as harness

    ns = f"bench-scale-{int(time.time())}"
    kc("create", "namespace", ns)
    # Room for SCALE more worker pods: one more kwok node (the harness's hold 2 x 110 pods).
    node = f"kwok-bench-{int(time.time())}"
    manifest = harness._fake_node_manifest(node).replace('pods: "110"', f'pods: "{SCALE + 100}"')
    kc("apply", "-f", "-", input=manifest)
    kube = Kube(api)
    logs = tempfile.mkdtemp(prefix="bench-operator-scale-")
    op = OperatorProcess(
        kubeconfig,
        [ns],
        default_image="bench/runtime:1",
        default_temporal_address="temporal:7233",
        resync_seconds=SCALE_RESYNC,
        log_dir=logs,
    )
    op.start()
    out: dict = {}
    try:
        ready_agents = CountWatcher(
            kube, "DeepAgent", ns, lambda a: (a.get("status") or {}).get("phase") == "Ready"
        )
        ready_deps = CountWatcher(
            kube, "Deployment", ns, lambda d: (d.get("status") or {}).get("readyReplicas") == 1
        )
        made_deps = CountWatcher(kube, "Deployment", ns, lambda d: True)
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: kube.create(agent(ns, f"s-{i}")), range(SCALE)))
        while time.monotonic() < t0 + 300 and SCALE not in ready_agents.reached:
            time.sleep(0.5)
        ready_agents.stop()
        ready_deps.stop()
        made_deps.stop()
        out["ready"] = len(ready_agents.passing)
        out["ready_s"] = ready_agents.reached.get(SCALE, time.monotonic()) - t0
        deps_at = ready_deps.reached.get(SCALE)
        out["deps_ready_s"] = None if deps_at is None else deps_at - t0
        made_at = made_deps.reached.get(SCALE)
        out["deps_made_s"] = None if made_at is None else made_at - t0
        # Steady state: nothing changes; the window holds at least one full resync.
        time.sleep(SCALE_RESYNC)
        w0, r0 = _requests(op)
        window = 60.0
        time.sleep(window)
        w1, r1 = _requests(op)
        out["writes_per_agent_min"] = (w1 - w0) / SCALE * 60 / window
        out["reads_per_agent_min"] = (r1 - r0) / SCALE * 60 / window
        out["rss_mb"] = op.peak_rss_bytes() / 2**20
        # All deleted: the operator's per-agent state must drain to nothing.
        kc("delete", "deepagents", "--all", "-n", ns, "--wait=false")
        t1 = time.monotonic()
        state = {}
        while time.monotonic() < t1 + 120:
            m = op.metrics()
            state = {k: m.get(k) for k in ("tracked_agents", "agent_locks")}
            if not list(kube.list("DeepAgent", ns)) and not any(state.values()):
                break
            time.sleep(1.0)
        out["state"] = state
    finally:
        op.stop()
        shutil.rmtree(logs, ignore_errors=True)
        kc("delete", "namespace", ns, "--wait=false")
        kc("delete", "node", node, "--wait=false")
    return out


def main() -> int:
    with cluster() as (kubeconfig, kubectl, where):
        env = dict(os.environ, KUBECONFIG=kubeconfig)

        def kc(*args: str, input: str | None = None) -> None:
            subprocess.run(
                [kubectl, *args], env=env, input=input, text=True, check=True, capture_output=True
            )

        kc("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        _wait_established(config.new_client_from_config(config_file=kubeconfig))
        ns = f"bench-{int(time.time())}"
        kc("create", "namespace", ns)
        api = config.new_client_from_config(config_file=kubeconfig)
        kube = Kube(api)
        logs = tempfile.mkdtemp(prefix="bench-operator-")
        op = OperatorProcess(
            kubeconfig,
            [ns],
            default_image="bench/runtime:1",
            default_temporal_address="temporal:7233",
            resync_seconds=60,
            log_dir=logs,
        )
        op.start()
        try:
            watcher = DeploymentWatcher(api, ns)
            # 1. apply -> Deployment latency, one at a time
            latencies = []
            for i in range(APPLIES):
                name = f"lat-{i}"
                t0 = time.monotonic()
                kc("apply", "-f", "-", input=json.dumps(agent(ns, name)))
                latencies.append(watcher.wait(f"{name}-worker") - t0)
            # 2. many DeepAgents at once -> all Ready
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: kube.create(agent(ns, f"many-{i}")), range(AGENTS)))
            created = time.monotonic() - t0
            last_dep = max(watcher.wait(f"many-{i}-worker", 120) for i in range(AGENTS)) - t0
            watcher.stop()
            deadline = t0 + 300
            ready = 0
            deps_ready = None
            while time.monotonic() < deadline:
                if deps_ready is None:
                    deps = list(kube.list("Deployment", ns))
                    n = sum(
                        1
                        for d in deps
                        if d["metadata"]["name"].startswith("many-")
                        and (d.get("status") or {}).get("readyReplicas") == 1
                    )
                    if n >= AGENTS:
                        deps_ready = time.monotonic() - t0
                items = list(kube.list("DeepAgent", ns))
                ready = sum(
                    1
                    for a in items
                    if a["metadata"]["name"].startswith("many-")
                    and (a.get("status") or {}).get("phase") == "Ready"
                )
                if ready >= AGENTS:
                    break
                time.sleep(0.25)
            all_ready = time.monotonic() - t0
            rss_mb = op.peak_rss_bytes() / 2**20
        finally:
            op.stop()
            shutil.rmtree(logs, ignore_errors=True)
            subprocess.run(
                [kubectl, "delete", "namespace", ns, "--wait=false"], env=env, capture_output=True
            )
        big = scale(kubeconfig, kc, api) if SCALE else None

    p50 = statistics.median(latencies)
    p90 = statistics.quantiles(latencies, n=10)[-1] if len(latencies) >= 2 else p50
    ok_ready = ready >= AGENTS
    rows = [
        (
            "p50 apply -> worker Deployment",
            f"{p50 * 1000:.0f} ms",
            "<= 1000 ms",
            p50 <= 1.0,
            f"{p50 / 1.0:.2f}",
        ),
        ("p90 apply -> worker Deployment", f"{p90 * 1000:.0f} ms", "-", True, "-"),
        (
            f"{AGENTS} DeepAgents -> all Ready",
            f"{all_ready:.1f} s" if ok_ready else f"timeout ({ready}/{AGENTS} Ready)",
            "<= 30 s",
            ok_ready and all_ready <= 30,
            f"{all_ready / 30:.2f}",
        ),
        (f"  (creating the {AGENTS} CRs)", f"{created:.1f} s", "-", True, "-"),
        (f"  (all {AGENTS} worker Deployments exist)", f"{last_dep:.1f} s", "-", True, "-"),
        (
            f"  (all {AGENTS} worker Deployments ready, per kube-controller-manager)",
            f"{deps_ready:.1f} s" if deps_ready is not None else "-",
            "-",
            True,
            "-",
        ),
        (
            "operator peak RSS",
            f"{rss_mb:.0f} MB",
            "<= 200 MB",
            rss_mb <= 200,
            f"{rss_mb / 200:.2f}",
        ),
    ]
    if big is not None:
        ok_big = big["ready"] >= SCALE
        drained = not any(big["state"].values())
        rows += [
            (
                f"{SCALE} DeepAgents -> all Ready",
                f"{big['ready_s']:.1f} s" if ok_big else f"timeout ({big['ready']}/{SCALE} Ready)",
                "<= 60 s",
                ok_big and big["ready_s"] <= 60,
                f"{big['ready_s'] / 60:.2f}",
            ),
            (
                f"  (all {SCALE} worker Deployments exist: the operator's part)",
                f"{big['deps_made_s']:.1f} s" if big["deps_made_s"] is not None else "-",
                "-",
                True,
                "-",
            ),
            (
                f"  (all {SCALE} worker Deployments ready, per kube-controller-manager)",
                f"{big['deps_ready_s']:.1f} s" if big["deps_ready_s"] is not None else "-",
                "-",
                True,
                "-",
            ),
            (
                f"  operator peak RSS with {SCALE} DeepAgents",
                f"{big['rss_mb']:.0f} MB",
                "<= 300 MB",
                big["rss_mb"] <= 300,
                f"{big['rss_mb'] / 300:.2f}",
            ),
            (
                "  API writes per agent per minute at steady state",
                f"{big['writes_per_agent_min']:.2f}",
                "0",
                big["writes_per_agent_min"] == 0,
                "-",
            ),
            (
                f"  API reads per agent per minute at steady state (resync every {SCALE_RESYNC:.0f} s)",
                f"{big['reads_per_agent_min']:.3f}",
                "~0: children from the watches; one paged DeepAgent list per resync",
                big["reads_per_agent_min"] <= 0.05,
                "-",
            ),
            (
                f"  per-agent state after all {SCALE} are deleted",
                ", ".join(f"{k}={v:.0f}" for k, v in big["state"].items() if v is not None),
                "0",
                drained,
                "-",
            ),
        ]
    print(f"Operator ({APPLIES} sequential applies, {AGENTS} concurrent DeepAgents; {where})\n")
    print("| metric | measured | target | ratio to target | ok |")
    print("|---|---|---|---|---|")
    for metric, val, target, ok, ratio in rows:
        print(f"| {metric} | {val} | {target} | {ratio} | {'yes' if ok else 'NO'} |")
    if not all(r[3] for r in rows):
        print("\nsome targets were missed (see the ok column)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
