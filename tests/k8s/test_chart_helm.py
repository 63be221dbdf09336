"""The Helm chart: lint, template combinations, install into the local control plane, RBAC.

``helm`` is the pinned build the k8s harness provides (``k8s_cluster.helm``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "deepagent-operator"
CRD = ROOT / "crds" / "deepagent.yaml"


def render(k8s_cluster, *sets: str, check: bool = True, include_crds: bool = False):
    args = ["template", "rel", str(CHART), "--namespace", "ops"]
    if include_crds:
        args.append("--include-crds")
    for s in sets:
        args += ["--set", s]
    proc = k8s_cluster.helm(*args, check=check)
    if not check:
        return proc
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def operator_container(docs) -> dict:
    (dep,) = by_kind(docs)["Deployment"]
    return dep["spec"]["template"]["spec"]["containers"][0]


def env_of(docs) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in operator_container(docs)["env"]}


def rules_allow(rules, group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


# -- lint and templates ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["watch.namespaces={a,b}"],
        ["metrics.enabled=true", "podDisruptionBudget.enabled=true"],
        ["peering.enabled=true", "replicaCount=2"],
    ],
    ids=["default", "namespaced", "metrics-pdb", "peering"],
)
def test_helm_lint_strict(k8s_cluster, sets):
    args = ["lint", "--strict", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = k8s_cluster.helm(*args)
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


def test_default_render_cluster_wide(k8s_cluster):
    docs = render(k8s_cluster)
    kinds = by_kind(docs)
    assert set(kinds) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    }
    roles = {r["metadata"]["name"]: r for r in kinds["ClusterRole"]}
    assert set(roles) == {"rel-deepagent-operator", "deepagent-edit", "deepagent-view"}
    main = roles["rel-deepagent-operator"]["rules"]
    for group, resource, verb in [
        ("deepagent.dev", "deepagents", "watch"),
        ("deepagent.dev", "deepagents/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "statefulsets", "patch"),
        ("", "secrets", "create"),
        ("", "services", "delete"),
        ("networking.k8s.io", "networkpolicies", "create"),
        ("autoscaling", "horizontalpodautoscalers", "create"),
        ("", "events", "create"),
    ]:
        assert rules_allow(main, group, resource, verb), (group, resource, verb)
    assert not rules_allow(main, "", "namespaces", "delete")
    assert not rules_allow(main, "", "pods", "create")
    for verb in ("list", "watch", "update", "delete"):  # Secrets: get, create, patch only
        assert not rules_allow(main, "", "secrets", verb), verb
    assert not rules_allow(main, "apiextensions.k8s.io", "customresourcedefinitions", "list")
    c = operator_container(docs)
    assert c["args"][:2] == ["run", "--standalone"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = env_of(docs)
    assert env["DEEPAGENT_WATCH_NAMESPACES"] == ""
    assert env["DEEPAGENT_DEFAULT_IMAGE"] == "deepagent-temporal/runtime:0.1.0"
    assert env["DEEPAGENT_REDIS_IMAGE"] == "redis:7.4-alpine"
    assert env["DEEPAGENT_METRICS_PORT"] == "0"
    assert env["DEEPAGENT_OPERATOR_NAMESPACE"] == "ops"
    assert env["DEEPAGENT_OPERATOR_POD_LABELS"] == (
        "app.kubernetes.io/name=deepagent-operator,app.kubernetes.io/instance=rel"
    )
    assert c["image"] == "deepagent-temporal/operator:0.1.0"
    (dep,) = kinds["Deployment"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "deepagent-operator"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["helm.sh/chart"] == "deepagent-operator-0.1.0"


def test_namespaced_render_has_roles_per_namespace(k8s_cluster):
    docs = render(k8s_cluster, "watch.namespaces={team-a,team-b}")
    kinds = by_kind(docs)
    assert sorted(r["metadata"]["namespace"] for r in kinds["Role"]) == ["team-a", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in kinds["RoleBinding"]) == [
        "team-a",
        "team-b",
    ]
    for binding in kinds["RoleBinding"]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-deepagent-operator", "namespace": "ops"}
        ]
    # nothing cluster-wide for the operator: the only ClusterRoles are the aggregated ones
    # for people, and there is no ClusterRoleBinding
    assert sorted(r["metadata"]["name"] for r in kinds["ClusterRole"]) == [
        "deepagent-edit",
        "deepagent-view",
    ]
    assert "ClusterRoleBinding" not in kinds
    assert env_of(docs)["DEEPAGENT_WATCH_NAMESPACES"] == "team-a,team-b"
    docs = render(k8s_cluster, "watch.namespaces={team-a}", "rbac.aggregatedRoles=false")
    assert "ClusterRole" not in by_kind(docs)


def test_images_and_settings_are_passed_to_the_operator(k8s_cluster):
    docs = render(
        k8s_cluster,
        "image.repository=reg/op",
        "image.tag=1.2.3",
        "runtimeImage.repository=reg/rt",
        "runtimeImage.tag=9",
        "redisImage.repository=reg/redis",
        "redisImage.tag=8",
        "temporal.defaultAddress=temporal.t:7233",
        "resyncSeconds=15",
        "logLevel=debug",
    )
    env = env_of(docs)
    assert operator_container(docs)["image"] == "reg/op:1.2.3"
    assert env["DEEPAGENT_DEFAULT_IMAGE"] == "reg/rt:9"
    assert env["DEEPAGENT_REDIS_IMAGE"] == "reg/redis:8"
    assert env["DEEPAGENT_DEFAULT_TEMPORAL_ADDRESS"] == "temporal.t:7233"
    assert env["DEEPAGENT_RESYNC_SECONDS"] == "15"
    assert "--debug" in operator_container(docs)["args"]
    docs = render(k8s_cluster, "runtimeImage.repository=")
    assert env_of(docs)["DEEPAGENT_DEFAULT_IMAGE"] == ""


def test_metrics_service_and_pdb(k8s_cluster):
    docs = render(
        k8s_cluster,
        "metrics.enabled=true",
        "podDisruptionBudget.enabled=true",
    )
    kinds = by_kind(docs)
    (svc,) = kinds["Service"]
    assert svc["metadata"]["name"] == "rel-deepagent-operator-metrics"
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1
    ports = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert env_of(docs)["DEEPAGENT_METRICS_PORT"] == "9090"
    docs = render(
        k8s_cluster, "podDisruptionBudget.enabled=true", "podDisruptionBudget.maxUnavailable=1"
    )
    (pdb,) = by_kind(docs)["PodDisruptionBudget"]
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": pdb["spec"]["selector"],
    }


def test_peering_mode(k8s_cluster):
    docs = render(k8s_cluster, "peering.enabled=true", "replicaCount=2", "peering.priority=-10")
    c = operator_container(docs)
    assert "--peering=deepagent-operator" in c["args"]
    assert "--priority=-10" in c["args"]
    assert "--standalone" not in c["args"]
    (dep,) = by_kind(docs)["Deployment"]
    assert dep["spec"]["replicas"] == 2
    roles = by_kind(docs)["ClusterRole"]
    assert any(rules_allow(r["rules"], "kopf.dev", "clusterkopfpeerings", "patch") for r in roles)
    docs = render(k8s_cluster, "peering.enabled=true", "watch.namespaces={a}")
    (role,) = by_kind(docs)["Role"]
    assert rules_allow(role["rules"], "kopf.dev", "kopfpeerings", "patch")


def test_several_replicas_need_peering(k8s_cluster):
    proc = render(k8s_cluster, "replicaCount=2", check=False)
    assert proc.returncode != 0
    assert "peering.enabled=true" in proc.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "logLevel=loud",
        "replicaCount=-1",
        "watch.namespaces={Bad_NS}",
        "temporal.defaultAddress=no-port",
        "healthPort=0",
        "unknownKey=1",
        "image.pullPolicy=Sometimes",
    ],
)
def test_values_schema_rejects_bad_values(k8s_cluster, bad):
    proc = render(k8s_cluster, bad, check=False)
    assert proc.returncode != 0, bad
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_crd_is_shipped_with_the_chart(k8s_cluster):
    docs = render(k8s_cluster, include_crds=True)
    (crd,) = by_kind(docs)["CustomResourceDefinition"]
    assert crd == yaml.safe_load(CRD.read_text())
    assert (CHART / "crds" / "deepagent.yaml").read_bytes() == CRD.read_bytes()


def test_notes_render(k8s_cluster):
    proc = k8s_cluster.helm(
        "install", "rel", str(CHART), "--dry-run=client", "--namespace", "ops",
        "--set", "watch.namespaces={agents}",
    )  # fmt: skip
    assert "It watches only these namespaces: agents." in proc.stdout
    assert "kubectl get da" in proc.stdout


# -- install into the cluster (RBAC: test_operator_rbac.py) ----------------------------------
def test_helm_install_succeeds(k8s_cluster):
    op_ns = k8s_cluster.create_namespace("chartop")
    release = f"inst-{op_ns[-8:]}"
    try:
        k8s_cluster.helm(
            "install", release, str(CHART), "--namespace", op_ns,
            "--set", f"watch.namespaces={{{op_ns}}}", "--set", "rbac.aggregatedRoles=false",
        )  # fmt: skip
        status = json.loads(k8s_cluster.helm("status", release, "-n", op_ns, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
        k8s_cluster.wait_established("crd/deepagents.deepagent.dev")
        dep = f"deployment/{release}-deepagent-operator"
        k8s_cluster.kubectl("rollout", "status", dep, "-n", op_ns, "--timeout=90s")
    finally:
        k8s_cluster.helm("uninstall", release, "--namespace", op_ns, check=False)
        k8s_cluster.delete_namespace(op_ns)
