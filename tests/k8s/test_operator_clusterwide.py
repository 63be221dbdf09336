"""The operator watching all namespaces (the chart's default mode)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deepagent_operator.kube import Kube
from tests.harness.operator_process import OperatorProcess

pytestmark = pytest.mark.k8s

CRD = Path(__file__).resolve().parents[2] / "crds" / "deepagent.yaml"


def test_all_namespaces_and_operator_defaults(k8s_cluster, tmp_path):
    k8s_cluster.install_crd(CRD)
    kube = Kube(k8s_cluster.api_client)
    namespaces = [k8s_cluster.create_namespace("cwa"), k8s_cluster.create_namespace("cwb")]
    try:
        for ns in namespaces:
            agent = {
                "apiVersion": "deepagent.dev/v1alpha1",
                "kind": "DeepAgent",
                "metadata": {"name": "minimal", "namespace": ns},
                "spec": {"graph": "pkg.mod:agent"},  # image and Temporal from the operator
            }
            k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(agent))
        with OperatorProcess(
            k8s_cluster.kubeconfig,
            [],  # all namespaces
            default_image="example/runtime:2",
            default_temporal_address="temporal.temporal:7233",
            resync_seconds=5,
            log_dir=str(tmp_path),
        ) as op:
            deadline = time.monotonic() + 60
            phases: dict[str, str | None] = {}
            while time.monotonic() < deadline:
                phases = {
                    ns: ((kube.get("DeepAgent", ns, "minimal") or {}).get("status") or {}).get(
                        "phase"
                    )
                    for ns in namespaces
                }
                if all(p == "Ready" for p in phases.values()):
                    break
                time.sleep(0.5)
            assert all(p == "Ready" for p in phases.values()), (phases, op.log_tail(60))
        for ns in namespaces:
            dep = kube.get("Deployment", ns, "minimal-worker")
            c = dep["spec"]["template"]["spec"]["containers"][0]
            assert c["image"] == "example/runtime:2"
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["TEMPORAL_ADDRESS"] == "temporal.temporal:7233"
            assert env["TEMPORAL_TASK_QUEUE"] == "minimal"
            assert "REDIS_URL" not in env  # Disabled by default: Phase 1 only
            assert dep["spec"]["replicas"] == 1
        # The operator is stopped now: no finalizer holds the DeepAgent, GC removes children.
        ns = namespaces[0]
        assert not kube.get("DeepAgent", ns, "minimal")["metadata"].get("finalizers")
        k8s_cluster.kubectl("delete", "da", "minimal", "-n", ns, "--timeout=30s")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and kube.get("Deployment", ns, "minimal-worker"):
            time.sleep(0.5)
        assert kube.get("Deployment", ns, "minimal-worker") is None
    finally:
        for ns in namespaces:
            k8s_cluster.delete_namespace(ns)
