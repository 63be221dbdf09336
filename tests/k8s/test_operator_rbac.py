"""The chart's RBAC is exactly what the operator uses, in both watch modes.

Checked with ``kubectl auth can-i`` both ways: ``--list`` (beyond what every account may do)
must be exactly the operator's uses, explicit checks of what must be allowed and what must
be denied; then the operator runs with the chart's ServiceAccount through every path that
needs a permission (create, drift, Redis password repair, deletes, events) without a single
403. Also: the aggregated ClusterRoles give namespace admins and viewers DeepAgent rights.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

from deepagent_operator.kube import Kube
from tests.harness.operator_process import OperatorProcess
from tests.harness.redis_pods import RedisPods
from tests.harness.wait import wait_for

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "deepagent-operator"

#: What the operator's code uses in a namespace it watches (resource -> verbs).
USED = {
    "deepagents.deepagent.dev": {"get", "list", "watch", "patch"},
    "deepagents.deepagent.dev/status": {"patch"},
    "deployments.apps": {"get", "list", "watch", "create", "patch", "delete"},
    "statefulsets.apps": {"get", "list", "watch", "create", "patch", "delete"},
    "services": {"get", "list", "watch", "create", "patch", "delete"},
    "networkpolicies.networking.k8s.io": {"get", "list", "watch", "create", "patch", "delete"},
    "horizontalpodautoscalers.autoscaling": {"get", "list", "watch", "create", "patch", "delete"},
    "secrets": {"get", "create", "patch"},
    "configmaps": {"get"},
    "events": {"create"},
}
#: What must be denied everywhere although it looks close to a use.
DENIED = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("update", "deployments.apps"),
    ("deletecollection", "deployments.apps"),
    ("update", "deepagents.deepagent.dev"),
    ("delete", "deepagents.deepagent.dev"),
    ("create", "deepagents.deepagent.dev"),
    ("create", "pods"),
    ("list", "configmaps"),
    ("create", "configmaps"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts"),
]
#: Cluster-scoped: denied in both modes (kopf's CRD and namespace scanning is off).
CLUSTER_DENIED = [
    ("list", "namespaces"),
    ("watch", "namespaces"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "nodes"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
]


def can_i(k8s_cluster, who: str, verb: str, resource: str, namespace: str | None) -> bool:
    resource, _, sub = resource.partition("/")  # (kubectl reads `res/x` as the object x)
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    args += [f"--subresource={sub}"] if sub else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return k8s_cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def rules(k8s_cluster, who: str, namespace: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list``: resource -> verbs (non-resource URLs left out)."""
    out = k8s_cluster.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={who}").stdout
    found: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        if not line or line[0].isspace():
            continue
        verbs = re.findall(r"\[([^\]]*)\]", line)[-1].split()
        found.setdefault(line.split()[0], set()).update(verbs)
    return found


def granted(k8s_cluster, who: str, namespace: str) -> dict[str, set[str]]:
    """What ``who`` may do in ``namespace`` beyond what any ServiceAccount may do."""
    base = rules(k8s_cluster, f"system:serviceaccount:{namespace}:nobody", namespace)
    mine = rules(k8s_cluster, who, namespace)
    return {
        res: verbs - base.get(res, set())
        for res, verbs in mine.items()
        if verbs - base.get(res, set())
    }


def install(k8s_cluster, prefix: str, *sets: str) -> dict:
    op_ns = k8s_cluster.create_namespace(prefix)
    release = f"{prefix}-{op_ns[-8:]}"
    args = ["install", release, str(CHART), "--namespace", op_ns]
    for s in sets:
        args += ["--set", s]
    k8s_cluster.helm(*args)
    sa = f"{release}-deepagent-operator"
    return {
        "op_ns": op_ns,
        "release": release,
        "sa": sa,
        "who": f"system:serviceaccount:{op_ns}:{sa}",
    }


@pytest.fixture(scope="module")
def namespaces(k8s_cluster):
    watched, other = k8s_cluster.create_namespace("rbacw"), k8s_cluster.create_namespace("rbaco")
    yield watched, other
    for ns in (watched, other):
        k8s_cluster.delete_namespace(ns)


@pytest.fixture(scope="module")
def namespaced(k8s_cluster, namespaces):
    watched, _ = namespaces
    r = install(k8s_cluster, "rbacns", f"watch.namespaces={{{watched}}}")  # aggregated roles
    yield r
    k8s_cluster.helm("uninstall", r["release"], "--namespace", r["op_ns"], check=False)
    k8s_cluster.delete_namespace(r["op_ns"])


@pytest.fixture(scope="module")
def cluster_wide(k8s_cluster, namespaces):
    r = install(k8s_cluster, "rbaccw", "rbac.aggregatedRoles=false")
    yield r
    k8s_cluster.helm("uninstall", r["release"], "--namespace", r["op_ns"], check=False)
    k8s_cluster.delete_namespace(r["op_ns"])


def test_namespaced_mode_grants_exactly_what_is_used(k8s_cluster, namespaces, namespaced):
    watched, other = namespaces
    who = namespaced["who"]
    assert granted(k8s_cluster, who, watched) == USED
    assert granted(k8s_cluster, who, other) == {}
    for resource, verbs in USED.items():
        for verb in verbs:
            assert can_i(k8s_cluster, who, verb, resource, watched), (verb, resource)
            assert not can_i(k8s_cluster, who, verb, resource, other), (verb, resource, other)
    for verb, resource in DENIED:
        assert not can_i(k8s_cluster, who, verb, resource, watched), (verb, resource)
    for verb, resource in [*CLUSTER_DENIED, ("list", "deepagents.deepagent.dev")]:
        assert not can_i(k8s_cluster, who, verb, resource, None), (verb, resource)


def test_cluster_wide_mode_grants_exactly_what_is_used(k8s_cluster, namespaces, cluster_wide):
    who = cluster_wide["who"]
    for ns in namespaces:
        assert granted(k8s_cluster, who, ns) == USED
    for resource, verbs in USED.items():
        for verb in verbs:
            assert can_i(k8s_cluster, who, verb, resource, namespaces[1]), (verb, resource)
    for verb in ("list", "watch"):  # the watches span all namespaces
        for resource, verbs in USED.items():
            if verb in verbs:
                assert can_i(k8s_cluster, who, verb, resource, None), (verb, resource)
    for verb, resource in DENIED:
        assert not can_i(k8s_cluster, who, verb, resource, namespaces[1]), (verb, resource)
    for verb, resource in [*CLUSTER_DENIED, ("list", "secrets")]:
        assert not can_i(k8s_cluster, who, verb, resource, None), (verb, resource)


def test_admins_and_viewers_get_deepagent_rights_by_aggregation(
    k8s_cluster, namespaces, namespaced
):
    watched, other = namespaces
    for user, role in (("alice", "admin"), ("erin", "edit"), ("bob", "view")):
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-{role}", "namespace": watched},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
    da = "deepagents.deepagent.dev"
    # The aggregation controller fills the built-in roles asynchronously.
    wait_for(
        "admin aggregates deepagent-edit",
        lambda: can_i(k8s_cluster, "alice", "create", da, watched),
    )
    wait_for(
        "view aggregates deepagent-view", lambda: can_i(k8s_cluster, "bob", "list", da, watched)
    )
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"):
        assert can_i(k8s_cluster, "alice", verb, da, watched), verb
        assert can_i(k8s_cluster, "erin", verb, da, watched), verb
        assert not can_i(k8s_cluster, "alice", verb, da, other), verb  # only where bound
    for verb in ("get", "list", "watch"):
        assert can_i(k8s_cluster, "bob", verb, da, watched), verb
    for verb in ("create", "update", "patch", "delete"):
        assert not can_i(k8s_cluster, "bob", verb, da, watched), verb
    assert not can_i(k8s_cluster, "alice", "patch", f"{da}/status", watched)  # operator's


# -- the operator with exactly these rights ----------------------------------------------------
def _exercise(k8s_cluster, kube: Kube, ns: str, op: OperatorProcess) -> None:
    """Every path of the operator that needs a permission; then no 403 anywhere."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys", "namespace": ns},
            "data": {"K": base64.b64encode(b"v").decode()},
        }
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": ns},
            "data": {"MODEL": "m"},
        }
    )
    spec = {
        "graph": "pkg.mod:agent",
        "temporal": {"address": "temporal:7233"},
        "envFrom": [{"secretRef": {"name": "keys"}}],
        "env": [
            {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODEL"}}}
        ],
        "streaming": {"redis": {"mode": "Managed"}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "resources": {"requests": {"cpu": "100m"}},
        "gateway": {"enabled": True},  # its API key Secret is generated (secrets: create)
    }
    agent = {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": "rbac", "namespace": ns},
        "spec": spec,
    }
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(agent))

    def phase():
        return ((kube.get("DeepAgent", ns, "rbac") or {}).get("status") or {}).get("phase")

    wait_for("Ready (Redis AUTH + PING included)", lambda: phase() == "Ready", logs=op.log_tail)
    assert kube.get("HorizontalPodAutoscaler", ns, "rbac-worker") is not None
    assert kube.get("Secret", ns, "rbac-gateway-api-key") is not None
    # The Redis password Secret of an older operator: redis.conf is added (secrets: patch).
    k8s_cluster.kubectl(
        "patch", "secret", "rbac-redis-auth", "-n", ns, "--type=json",
        "-p", '[{"op": "remove", "path": "/data/redis.conf"}]',
    )  # fmt: skip
    wait_for(
        "redis.conf restored",
        lambda: "redis.conf" in (kube.get("Secret", ns, "rbac-redis-auth") or {}).get("data", {}),
        logs=op.log_tail,
    )
    # Drift: a deleted Service is recreated (services: watch, create).
    kube.delete("Service", ns, "rbac-redis")
    wait_for("Service restored", lambda: kube.get("Service", ns, "rbac-redis"), logs=op.log_tail)
    # Deletes: Redis no longer Managed, no autoscaling, no gateway (deployments: delete).
    patch = {
        "spec": {
            "streaming": {"redis": {"mode": "Disabled"}},
            "autoscaling": None,
            "replicas": 1,
            "gateway": {"enabled": False},
        }
    }
    k8s_cluster.kubectl("patch", "da", "rbac", "-n", ns, "--type=merge", "-p", json.dumps(patch))
    for kind in ("StatefulSet", "Service", "NetworkPolicy"):
        wait_for(
            f"{kind} deleted",
            lambda k=kind: kube.get(k, ns, "rbac-redis") is None,
            logs=op.log_tail,
        )
    wait_for("HPA deleted", lambda: kube.get("HorizontalPodAutoscaler", ns, "rbac-worker") is None)
    for kind in ("Deployment", "Service"):
        wait_for(
            f"gateway {kind} deleted",
            lambda k=kind: kube.get(k, ns, "rbac-gateway") is None,
            logs=op.log_tail,
        )
    events = json.loads(k8s_cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    assert {"Created", "Deleted"} <= {e["reason"] for e in events["items"]}
    time.sleep(2)  # a resync round with the final spec
    log = op.log_path.read_text()
    # (not a bare "403": log timestamps have milliseconds)
    assert not re.search(r"HTTP 403|: 403\b|forbidden", log, re.I), op.log_tail(80)
    k8s_cluster.kubectl("delete", "da", "rbac", "-n", ns, "--wait=true")


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
def test_operator_works_with_exactly_these_rights(
    k8s_cluster, namespaces, namespaced, cluster_wide, mode, tmp_path
):
    release = namespaced if mode == "namespaced" else cluster_wide
    ns = k8s_cluster.create_namespace("rbacx") if mode == "cluster-wide" else namespaces[0]
    kubeconfig = k8s_cluster.service_account_kubeconfig(
        release["op_ns"], release["sa"], tmp_path / "sa.kubeconfig"
    )
    kube = Kube(k8s_cluster.api_client)
    try:
        with (
            RedisPods(kube, ns, tmp_path / "hosts.json", tmp_path) as pods,
            OperatorProcess(
                kubeconfig,
                [ns] if mode == "namespaced" else [],
                default_image="example/runtime:1",
                resync_seconds=1,
                log_dir=str(tmp_path),
                hosts_file=pods.hosts_file,
            ) as op,
        ):
            _exercise(k8s_cluster, kube, ns, op)
    finally:
        if mode == "cluster-wide":
            k8s_cluster.delete_namespace(ns)
