"""The API server itself rejects malformed DeepAgents, naming the offending field.

Only the CRD is needed (generated from the pydantic model); no operator runs here.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "deepagent.yaml"
GROUP, VERSION, PLURAL = "deepagent.dev", "v1alpha1", "deepagents"

VALID = {
    "graph": "my_agents.coder:agent",
    "image": "example/agent:1",
    "temporal": {"address": "temporal:7233"},
}


def install_crd(k8s_cluster) -> None:
    k8s_cluster.install_crd(CRD)
    # The CR endpoint can lag behind Established by a moment.
    api = client.CustomObjectsApi(k8s_cluster.api_client)
    for _ in range(50):
        try:
            api.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
            return
        except ApiException:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def crd_ns(k8s_cluster):
    install_crd(k8s_cluster)
    ns = k8s_cluster.create_namespace("valid")
    yield ns
    k8s_cluster.delete_namespace(ns)


def with_(path: str, value, base=None):
    """VALID with one field set (``path`` dotted; value ``DELETE`` removes it)."""
    spec = copy.deepcopy(VALID if base is None else base)
    node = spec
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return spec


DELETE = object()
EXTERNAL = {"mode": "External"}
MANAGED = {"mode": "Managed"}
SECRET_KEY = {"name": "s", "key": "k"}

# (id, spec, field named in the error)
MALFORMED = [
    ("missing-graph", with_("graph", DELETE), "spec.graph"),
    ("graph-no-colon", with_("graph", "my_agents.coder"), "spec.graph"),
    ("graph-empty-attr", with_("graph", "my_agents.coder:"), "spec.graph"),
    ("graph-space", with_("graph", "my agents:coder"), "spec.graph"),
    ("graph-two-colons", with_("graph", "a:b:c"), "spec.graph"),
    ("graph-wrong-type", with_("graph", 42), "spec.graph"),
    ("graph-empty", with_("graph", ""), "spec.graph"),
    ("replicas-negative", with_("replicas", -1), "spec.replicas"),
    ("replicas-string", with_("replicas", "two"), "spec.replicas"),
    ("replicas-float", with_("replicas", 1.5), "spec.replicas"),
    ("replicas-too-many", with_("replicas", 5000), "spec.replicas"),
    ("redis-unknown-mode", with_("streaming.redis.mode", "Cluster"), "spec.streaming.redis.mode"),
    ("external-without-url", with_("streaming.redis", dict(EXTERNAL)), "spec.streaming.redis"),
    (
        "external-url-and-secret",
        with_(
            "streaming.redis",
            {**EXTERNAL, "url": "redis://r:6379", "urlSecretRef": {"name": "r", "key": "url"}},
        ),
        "spec.streaming.redis",
    ),
    (
        "managed-with-url",
        with_("streaming.redis", {"mode": "Managed", "url": "redis://r:6379"}),
        "spec.streaming.redis",
    ),
    (
        "redis-url-not-redis",
        with_("streaming.redis", {**EXTERNAL, "url": "http://r:6379"}),
        "spec.streaming.redis.url",
    ),
    (
        "redis-url-secret-no-key",
        with_("streaming.redis", {**EXTERNAL, "urlSecretRef": {"name": "r"}}),
        "spec.streaming.redis.urlSecretRef.key",
    ),
    (
        "redis-storage-type",
        with_("streaming.redis", {"mode": "Managed", "storage": {"type": "HostPath"}}),
        "spec.streaming.redis.storage.type",
    ),
    (
        "redis-storage-size",
        with_("streaming.redis", {"mode": "Managed", "storage": {"size": "lots"}}),
        "spec.streaming.redis.storage.size",
    ),
    ("address-no-port", with_("temporal.address", "temporal"), "spec.temporal.address"),
    ("address-bad-port", with_("temporal.address", "temporal:99999"), "spec.temporal.address"),
    ("address-url", with_("temporal.address", "http://temporal:7233"), "spec.temporal.address"),
    ("address-wrong-type", with_("temporal.address", 7233), "spec.temporal.address"),
    ("temporal-namespace-empty", with_("temporal.namespace", ""), "spec.temporal.namespace"),
    (
        "api-key-no-key",
        with_("temporal.apiKeySecretRef", {"name": "tc"}),
        "spec.temporal.apiKeySecretRef.key",
    ),
    ("tls-no-secret", with_("temporal.tls", {}), "spec.temporal.tls.secretName"),
    ("unknown-field", with_("bogus", 1), "spec.bogus"),
    ("unknown-nested-field", with_("streaming.colour", "blue"), "spec.streaming.colour"),
    ("tokens-wrong-type", with_("streaming.tokens", "yes"), "spec.streaming.tokens"),
    ("maxlen-zero", with_("streaming.maxLen", 0), "spec.streaming.maxLen"),
    ("ttl-negative", with_("streaming.ttlSeconds", -5), "spec.streaming.ttlSeconds"),
    (
        "autoscaling-and-replicas",
        with_("autoscaling", {"maxReplicas": 3}, with_("replicas", 2)),
        "spec.replicas and spec.autoscaling",
    ),
    (
        "autoscaling-min-gt-max",
        with_("autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.autoscaling",
    ),
    (
        "autoscaling-no-max",
        with_("autoscaling", {"minReplicas": 1}),
        "spec.autoscaling.maxReplicas",
    ),
    (
        "autoscaling-target",
        with_("autoscaling", {"maxReplicas": 3, "targetCPUUtilizationPercentage": 150}),
        "spec.autoscaling.targetCPUUtilizationPercentage",
    ),
    ("health-port-zero", with_("healthPort", 0), "spec.healthPort"),
    ("health-port-high", with_("healthPort", 70000), "spec.healthPort"),
    ("env-no-name", with_("env", [{"value": "x"}]), "spec.env[0].name"),
    ("env-bad-name", with_("env", [{"name": "1 bad", "value": "x"}]), "spec.env[0].name"),
    ("env-not-list", with_("env", {"A": "1"}), "spec.env"),
    ("envfrom-no-name", with_("envFrom", [{"secretRef": {}}]), "spec.envFrom[0].secretRef.name"),
    (
        "resources-bad-quantity",
        with_("resources", {"limits": {"cpu": "lots"}}),
        "spec.resources.limits.cpu",
    ),
    ("pull-policy", with_("imagePullPolicy", "Sometimes"), "spec.imagePullPolicy"),
    ("node-selector-int", with_("nodeSelector", {"pool": 1}), "spec.nodeSelector.pool"),
    ("task-queue-empty", with_("taskQueue", ""), "spec.taskQueue"),
    ("service-account-name", with_("serviceAccountName", "Bad_Name"), "spec.serviceAccountName"),
    ("image-empty", with_("image", ""), "spec.image"),
    ("tolerations-not-list", with_("tolerations", "none"), "spec.tolerations"),
    # Accepted by the API server before, refused by Kubernetes when the operator wrote the
    # children (T2 item 2): names, labels, quantities, env sources, autoscaling on CPU.
    ("managed-redis-dotted-name", with_("streaming.redis", MANAGED), "metadata.name"),
    ("managed-redis-name-starts-with-digit", with_("streaming.redis", MANAGED), "metadata.name"),
    ("pod-label-value", with_("podLabels", {"x": "bad value!"}), "spec.podLabels.x"),
    ("pod-label-value-too-long", with_("podLabels", {"x": "v" * 64}), "spec.podLabels.x"),
    ("pod-label-key", with_("podLabels", {"bad key!": "v"}), "spec.podLabels"),
    ("pod-label-key-too-long", with_("podLabels", {"k" * 64: "v"}), "spec.podLabels"),
    ("pod-label-key-prefix", with_("podLabels", {"Bad_Prefix/x": "v"}), "spec.podLabels"),
    ("pod-annotation-key", with_("podAnnotations", {"/x": "any value!"}), "spec.podAnnotations"),
    ("node-selector-value", with_("nodeSelector", {"pool": "a b"}), "spec.nodeSelector.pool"),
    ("node-selector-key", with_("nodeSelector", {"pool!": "a"}), "spec.nodeSelector"),
    (
        "resources-negative",
        with_("resources", {"requests": {"cpu": "-1"}}),
        "spec.resources.requests.cpu",
    ),
    (
        "resources-request-over-limit",
        with_("resources", {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}),
        "spec.resources",
    ),
    ("resources-unknown-name", with_("resources", {"limits": {"gpu": 1}}), "spec.resources.limits"),
    (
        "redis-resources-negative",
        with_("streaming.redis", {**MANAGED, "resources": {"limits": {"memory": "-1Gi"}}}),
        "spec.streaming.redis.resources.limits.memory",
    ),
    (
        "redis-pvc-size-zero",
        with_(
            "streaming.redis", {**MANAGED, "storage": {"type": "PersistentVolumeClaim", "size": 0}}
        ),
        "spec.streaming.redis.storage",
    ),
    (
        "env-value-and-value-from",
        with_("env", [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": SECRET_KEY}}]),
        "spec.env[0]",
    ),
    (
        "env-value-from-two-sources",
        with_(
            "env",
            [
                {
                    "name": "A",
                    "valueFrom": {"secretKeyRef": SECRET_KEY, "configMapKeyRef": SECRET_KEY},
                }
            ],
        ),
        "spec.env[0].valueFrom",
    ),
    (
        "env-value-from-empty",
        with_("env", [{"name": "A", "valueFrom": {}}]),
        "spec.env[0].valueFrom",
    ),
    (
        "env-from-two-sources",
        with_("envFrom", [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]),
        "spec.envFrom[0]",
    ),
    ("env-from-no-source", with_("envFrom", [{"prefix": "X_"}]), "spec.envFrom[0]"),
    (
        "autoscaling-without-cpu-request",
        with_("autoscaling", {"maxReplicas": 3}),
        "spec.resources.requests.cpu",
    ),
    (
        "autoscaling-memory-request-only",
        with_(
            "autoscaling", {"maxReplicas": 3}, with_("resources", {"requests": {"memory": "1Gi"}})
        ),
        "spec.resources.requests.cpu",
    ),
]
#: Cases whose metadata.name is part of what is wrong.
NAMES = {"managed-redis-dotted-name": "a.b", "managed-redis-name-starts-with-digit": "1agent"}


def _create(k8s_cluster, ns: str, name: str, spec) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeepAgent", "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    client.CustomObjectsApi(k8s_cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body, field_validation="Strict"
    )


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


def test_there_are_at_least_60_cases():
    assert len(MALFORMED) >= 60
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


def test_valid_spec_is_accepted_and_defaulted(k8s_cluster, crd_ns):
    _create(k8s_cluster, crd_ns, "valid", VALID)
    obj = client.CustomObjectsApi(k8s_cluster.api_client).get_namespaced_custom_object(
        GROUP, VERSION, crd_ns, PLURAL, "valid"
    )
    spec = obj["spec"]
    assert spec["temporal"]["namespace"] == "default"
    assert spec["streaming"]["tokens"] is True
    assert spec["streaming"]["redis"]["mode"] == "Disabled"
    assert spec["streaming"]["redis"]["storage"] == {"type": "EmptyDir", "size": "1Gi"}
    assert spec["healthPort"] == 8080
    assert "replicas" not in spec


@pytest.mark.parametrize("case_id,spec,field", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_deepagent_is_rejected_naming_the_field(
    k8s_cluster, crd_ns, case_id, spec, field
):
    with pytest.raises(ApiException) as exc:
        _create(k8s_cluster, crd_ns, NAMES.get(case_id, f"bad-{case_id}"), spec)
    assert exc.value.status in (400, 422), exc.value
    message = _message(exc.value)
    assert field in message, f"{case_id}: {field!r} not in {message!r}"


def test_missing_spec_and_long_name_are_rejected(k8s_cluster, crd_ns):
    with pytest.raises(ApiException) as exc:
        _create(k8s_cluster, crd_ns, "no-spec", None)
    assert "spec" in _message(exc.value)
    with pytest.raises(ApiException) as exc:
        _create(k8s_cluster, crd_ns, "x" * 41, VALID)
    assert "metadata.name" in _message(exc.value)


def test_close_to_the_rules_is_accepted(k8s_cluster, crd_ns):
    """The new rules do not refuse what Kubernetes accepts."""
    accepted = {
        # dotted names are fine without Managed Redis (no Service is named after them)
        "a.b.c": VALID,
        "labels": with_(
            "podLabels",
            {"example.com/team": "a_b.c-1", "x": "", "k" * 63: "v" * 63},
            with_("podAnnotations", {"example.com/note": "any text at all!"}),
        ),
        "quantities": with_(
            "resources",
            {"requests": {"cpu": "200m", "memory": 1000}, "limits": {"cpu": 1, "memory": "1Ki"}},
        ),
        "gpus": with_("resources", {"limits": {"nvidia.com/gpu": 1, "hugepages-2Mi": "2Mi"}}),
        "hpa": with_(
            "autoscaling", {"maxReplicas": 3}, with_("resources", {"requests": {"cpu": "1"}})
        ),
        "env": with_(
            "env",
            [{"name": "A", "value": ""}, {"name": "B", "valueFrom": {"secretKeyRef": SECRET_KEY}}],
        ),
    }
    for name, spec in accepted.items():
        _create(k8s_cluster, crd_ns, name, spec)


def test_kubectl_apply_shows_the_field(k8s_cluster, crd_ns):
    manifest = json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DeepAgent",
            "metadata": {"name": "kubectl-bad", "namespace": crd_ns},
            "spec": with_("replicas", -3),
        }
    )
    proc = k8s_cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0
    assert "spec.replicas" in proc.stderr
    proc = k8s_cluster.kubectl(
        "apply", "-f", "-", input=manifest.replace('"replicas"', '"replicaz"'), check=False
    )
    assert proc.returncode != 0
    assert "replicaz" in proc.stderr


def test_kubectl_explain_documents_the_fields(k8s_cluster, crd_ns):
    def explain(path: str) -> str:
        # discovery can lag right after the CRD is installed
        for _ in range(20):
            proc = k8s_cluster.kubectl("explain", path, check=False)
            if proc.returncode == 0:
                return proc.stdout
            time.sleep(0.5)
        raise AssertionError(proc.stderr)

    assert "package.module:attribute" in explain("deepagent.spec.graph")
    assert "Managed" in explain("deepagent.spec.streaming.redis.mode")
    assert "host:port" in explain("deepagent.spec.temporal.address")
