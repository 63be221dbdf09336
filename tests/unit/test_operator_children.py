"""Pure child builders: spec in, manifests out."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest
import yaml

from deepagent_operator.children import (
    HASH_ANNOTATION,
    REDIS_AUTH_HASH_ANNOTATION,
    build_children,
    build_redis_secret,
    check_references,
    config_hash,
    redis_auth_hash,
    redis_conf,
    redis_conf_patch,
    referenced_objects,
)
from deepagent_operator.config import OperatorConfig
from deepagent_operator.model import SpecError, parse_spec
from deepagent_operator.plan import unwanted_children
from deepagent_temporal.contract import WorkerEnv

SAMPLE = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "operator" / "examples" / "deepagent.yaml").read_text()
)
CONFIG = OperatorConfig(default_image="ghcr.io/example/runtime:0.1", redis_image="redis:7.4")


def body(spec=None, name="coder", ns="agents"):
    b = copy.deepcopy(SAMPLE)
    b["metadata"] = {"name": name, "namespace": ns, "uid": "uid-123", "generation": 1}
    if spec is not None:
        b["spec"] = spec
    return b


def children(b, config=CONFIG, hash_="h1", redis_auth=None):
    return build_children(b, parse_spec(b["spec"]), config, hash_, redis_auth)


def unwanted(b):
    return unwanted_children(b["metadata"]["name"], parse_spec(b["spec"]))


def by_kind(desired):
    return {o["kind"]: o for o in desired}


def env_of(dep):
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_managed_redis_children_and_owner_refs():
    d = children(body())
    kinds = by_kind(d)
    assert set(kinds) == {"Deployment", "StatefulSet", "Service", "NetworkPolicy"}
    assert kinds["Deployment"]["metadata"]["name"] == "coder-worker"
    assert kinds["StatefulSet"]["metadata"]["name"] == "coder-redis"
    assert kinds["Service"]["metadata"]["name"] == "coder-redis"
    secret = build_redis_secret(body())
    assert secret["metadata"]["name"] == "coder-redis-auth"
    assert unwanted(body()) == [
        ("HorizontalPodAutoscaler", "coder-worker"),
        ("Deployment", "coder-gateway"),
        ("Service", "coder-gateway"),
    ]
    for obj in [*d, secret]:
        meta = obj["metadata"]
        assert meta["namespace"] == "agents"
        (ref,) = meta["ownerReferences"]
        assert ref == {
            "apiVersion": "deepagent.dev/v1alpha1",
            "kind": "DeepAgent",
            "name": "coder",
            "uid": "uid-123",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "deepagent-operator"
        assert meta["labels"]["deepagent.dev/agent"] == "coder"


def test_worker_env_contract():
    dep = by_kind(children(body()))["Deployment"]
    env = env_of(dep)
    assert env["DEEPAGENT_GRAPH"]["value"] == "my_agents.coder:agent"
    assert env["TEMPORAL_ADDRESS"]["value"] == "temporal-frontend.temporal:7233"
    assert env["TEMPORAL_NAMESPACE"]["value"] == "default"
    assert env["TEMPORAL_TASK_QUEUE"]["value"] == "coder"
    assert env["DEEPAGENT_TOKEN_STREAMING"]["value"] == "true"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "coder-redis-auth",
        "key": "password",
    }
    assert env["REDIS_URL"]["value"] == ("redis://:$(REDIS_PASSWORD)@coder-redis.agents.svc:6379/0")
    names = [e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # $(VAR) expansion order
    assert env["DEEPAGENT_STREAM_MAXLEN"]["value"] == "10000"
    assert env["DEEPAGENT_STREAM_TTL_SECONDS"]["value"] == "3600"
    assert env["DEEPAGENT_HEALTH_PORT"]["value"] == "8080"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["deepagent-temporal", "worker"]
    assert c["envFrom"] == [{"secretRef": {"name": "model-keys"}}]


def test_worker_probes_security_and_scheduling():
    spec = dict(
        SAMPLE["spec"],
        healthPort=9000,
        nodeSelector={"pool": "agents"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={"podAntiAffinity": {}},
        serviceAccountName="coder-sa",
        podAnnotations={"a": "b"},
        podLabels={"team": "x"},
    )
    dep = by_kind(children(body(spec)))["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["ports"] == [{"name": "health", "containerPort": 9000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert pod["tolerations"][0]["key"] == "gpu"
    assert pod["affinity"] == {"podAntiAffinity": {}}
    assert pod["serviceAccountName"] == "coder-sa"
    assert "automountServiceAccountToken" not in pod
    tmpl_meta = dep["spec"]["template"]["metadata"]
    assert tmpl_meta["annotations"] == {"a": "b", HASH_ANNOTATION: "h1"}
    assert tmpl_meta["labels"]["team"] == "x"
    assert dep["spec"]["selector"]["matchLabels"] == {
        "deepagent.dev/agent": "coder",
        "app.kubernetes.io/component": "worker",
    }
    assert dep["spec"]["replicas"] == 2


def test_disabled_redis_and_defaults():
    b = body({"graph": "a.b:c", "temporal": {"address": "t:7233"}})
    d = children(b)
    kinds = by_kind(d)
    assert set(kinds) == {"Deployment"}
    assert ("StatefulSet", "coder-redis") in unwanted(b)
    env = env_of(kinds["Deployment"])
    assert "REDIS_URL" not in env
    assert env["TEMPORAL_TASK_QUEUE"]["value"] == "coder"
    assert kinds["Deployment"]["spec"]["replicas"] == 1
    c = kinds["Deployment"]["spec"]["template"]["spec"]
    assert c["containers"][0]["image"] == "ghcr.io/example/runtime:0.1"
    assert c["automountServiceAccountToken"] is False


def test_external_redis_from_secret_and_tls_and_api_key():
    d = children(
        body(
            {
                "graph": "a:b",
                "temporal": {
                    "address": "ns.tmprl.cloud:7233",
                    "apiKeySecretRef": {"name": "tc", "key": "key"},
                    "tls": {"secretName": "temporal-tls"},
                },
                "streaming": {
                    "tokens": False,
                    "redis": {"mode": "External", "urlSecretRef": {"name": "r", "key": "url"}},
                },
            }
        )
    )
    dep = by_kind(d)["Deployment"]
    env = env_of(dep)
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "r", "key": "url"}
    assert env["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "tc", "key": "key"}
    assert env["TEMPORAL_TLS_CERT"]["value"].endswith("/tls.crt")
    assert env["DEEPAGENT_TOKEN_STREAMING"]["value"] == "false"
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["temporal-tls"]["secret"]["secretName"] == "temporal-tls"


def test_autoscaling_creates_hpa_and_drops_replicas():
    spec = {
        "graph": "a:b",
        "temporal": {"address": "t:1"},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
        "resources": {"requests": {"cpu": "100m"}},
    }
    kinds = by_kind(children(body(spec)))
    assert "replicas" not in kinds["Deployment"]["spec"]
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "coder-worker"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80


def test_redis_statefulset_storage_and_password_file():
    spec = dict(SAMPLE["spec"])
    spec["streaming"] = {
        "redis": {
            "mode": "Managed",
            "storage": {"type": "PersistentVolumeClaim", "size": "2Gi", "storageClassName": "fast"},
        }
    }
    sts = by_kind(children(body(spec)))["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "redis:7.4"
    # The password reaches Redis only as a config file from the auth Secret: not in argv,
    # not in the environment.
    assert c["command"] == ["redis-server", "/etc/redis/redis.conf"]
    assert "--requirepass" not in c["args"] and "env" not in c
    assert {"name": "auth", "mountPath": "/etc/redis", "readOnly": True} in c["volumeMounts"]
    auth = {
        "name": "auth",
        "secret": {
            "secretName": "coder-redis-auth",
            "items": [{"key": "redis.conf", "path": "redis.conf"}],
            "defaultMode": 0o440,
        },
    }
    (pvc,) = sts["spec"]["volumeClaimTemplates"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pod["volumes"] == [auth]
    sts2 = by_kind(children(body()))["StatefulSet"]
    assert sts2["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}, auth]
    assert "volumeClaimTemplates" not in sts2["spec"]


def test_redis_rolls_with_its_password():
    one = build_redis_secret(body())["data"]
    two = build_redis_secret(body())["data"]

    def template_hash(auth):
        sts = by_kind(children(body(), redis_auth=auth))["StatefulSet"]
        return sts["spec"]["template"]["metadata"]["annotations"][REDIS_AUTH_HASH_ANNOTATION]

    assert template_hash(one) == redis_auth_hash(one) == template_hash(dict(one))
    assert template_hash(one) != template_hash(two)
    assert one["password"] not in template_hash(one)


def test_redis_conf_follows_the_password():
    data = build_redis_secret(body(), password="s3cret")["data"]
    assert base64.b64decode(data["redis.conf"]).decode() == 'requirepass "s3cret"\n'
    assert redis_conf_patch(data) is None
    assert redis_conf('a"b\\c') == 'requirepass "a\\"b\\\\c"\n'
    # A Secret of an older operator (no redis.conf) or a password set by hand: redis.conf
    # is brought in step.
    by_hand = {"password": base64.b64encode(b"new").decode(), "redis.conf": data["redis.conf"]}
    patch = redis_conf_patch(by_hand)
    assert base64.b64decode(patch["data"]["redis.conf"]).decode() == 'requirepass "new"\n'
    assert redis_conf_patch({"password": data["password"]}) == {
        "data": {"redis.conf": data["redis.conf"]}
    }


def test_network_policy_admits_workers_and_labelled_clients():
    np = by_kind(children(body()))["NetworkPolicy"]
    assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    sources = np["spec"]["ingress"][0]["from"]
    assert {
        "podSelector": {
            "matchLabels": {"deepagent.dev/agent": "coder", "app.kubernetes.io/component": "worker"}
        }
    } in sources
    assert {"podSelector": {"matchLabels": {"deepagent.dev/redis-client": "coder"}}} in sources
    assert np["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert len(sources) == 2  # the operator's pod is unknown outside a cluster


def test_network_policy_admits_the_operator_for_its_auth_check():
    config = OperatorConfig(
        default_image="x",
        operator_namespace="deepagent-system",
        operator_pod_labels=(("app.kubernetes.io/instance", "rel"),),
    )
    np = by_kind(children(body(), config=config))["NetworkPolicy"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "deepagent-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "rel"}},
    } in np["spec"]["ingress"][0]["from"]


def test_redis_secret_password_is_random():
    a = build_redis_secret(body())["data"]["password"]
    b = build_redis_secret(body())["data"]["password"]
    assert a != b


def test_missing_image_is_a_spec_error():
    with pytest.raises(SpecError) as exc:
        children(body({"graph": "a:b", "temporal": {"address": "t:1"}}), OperatorConfig())
    assert exc.value.field == "spec.image"
    assert "set spec.image" in str(exc.value)


def test_missing_temporal_address_is_a_spec_error():
    with pytest.raises(SpecError) as exc:
        children(body({"graph": "a:b"}))
    assert exc.value.field == "spec.temporal.address"
    children(
        body({"graph": "a:b"}), OperatorConfig(default_image="x", default_temporal_address="t:1")
    )


def test_references_and_missing_secret():
    spec = parse_spec(
        {
            "graph": "a:b",
            "envFrom": [
                {"secretRef": {"name": "model-keys"}},
                {"configMapRef": {"name": "opt", "optional": True}},
            ],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}],
        }
    )
    refs = referenced_objects(spec)
    assert [(r.kind, r.name) for r in refs] == [
        ("Secret", "model-keys"),
        ("ConfigMap", "opt"),
        ("Secret", "s2"),
    ]
    with pytest.raises(SpecError) as exc:
        check_references(spec, {("Secret", "model-keys"): None, ("Secret", "s2"): {"k": "dg=="}})
    assert exc.value.field == "spec.envFrom[0].secretRef.name"
    assert exc.value.reason == "SecretNotFound"
    with pytest.raises(SpecError) as exc:
        check_references(spec, {("Secret", "model-keys"): {}, ("Secret", "s2"): {"other": ""}})
    assert exc.value.field == "spec.env[0].valueFrom.secretKeyRef"
    check_references(spec, {("Secret", "model-keys"): {}, ("Secret", "s2"): {"k": ""}})


def test_config_hash_covers_spec_and_referenced_data():
    spec = parse_spec(SAMPLE["spec"])
    base = config_hash(spec, CONFIG, {("Secret", "model-keys"): {"k": "YQ=="}})
    assert base == config_hash(spec, CONFIG, {("Secret", "model-keys"): {"k": "YQ=="}})
    assert base != config_hash(spec, CONFIG, {("Secret", "model-keys"): {"k": "Yg=="}})
    spec2 = parse_spec(dict(SAMPLE["spec"], env=[{"name": "A", "value": "1"}]))
    assert base != config_hash(spec2, CONFIG, {("Secret", "model-keys"): {"k": "YQ=="}})
    spec3 = parse_spec({k: v for k, v in SAMPLE["spec"].items() if k != "image"})
    h3 = config_hash(spec3, CONFIG, {})
    assert h3 != config_hash(spec3, OperatorConfig(default_image="other"), {})
    assert len(base) == 16
    # Scaling the workers never rolls them.
    scaled = parse_spec(dict(SAMPLE["spec"], replicas=5))
    refs = {("Secret", "model-keys"): {"k": "YQ=="}}
    assert config_hash(scaled, CONFIG, refs) == base
    hpa = {k: v for k, v in SAMPLE["spec"].items() if k != "replicas"}
    hpa["autoscaling"] = {"minReplicas": 2, "maxReplicas": 4}
    hpa["resources"] = SAMPLE["spec"].get("resources") or {"requests": {"cpu": "100m"}}
    auto = parse_spec(hpa)
    auto_no_hpa = parse_spec({k: v for k, v in hpa.items() if k != "autoscaling"})
    assert config_hash(auto, CONFIG, refs) == config_hash(auto_no_hpa, CONFIG, refs)


def test_builders_are_pure():
    b = body()
    before = copy.deepcopy(b)
    first = children(b)
    second = children(b)
    assert b == before
    assert first == second


def test_worker_env_is_rendered_in_the_contract_order():
    dep = by_kind(children(body()))["Deployment"]
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "DEEPAGENT_GRAPH", "value": "my_agents.coder:agent"},
        {"name": "TEMPORAL_ADDRESS", "value": "temporal-frontend.temporal:7233"},
        {"name": "TEMPORAL_NAMESPACE", "value": "default"},
        {"name": "TEMPORAL_TASK_QUEUE", "value": "coder"},
        {"name": "DEEPAGENT_TOKEN_STREAMING", "value": "true"},
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "coder-redis-auth", "key": "password"}},
        },
        {"name": "REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@coder-redis.agents.svc:6379/0"},
        {"name": "DEEPAGENT_STREAM_MAXLEN", "value": "10000"},
        {"name": "DEEPAGENT_STREAM_TTL_SECONDS", "value": "3600"},
        {"name": "DEEPAGENT_HEALTH_PORT", "value": "8080"},
    ]
    contract_order = [var.name for var in WorkerEnv.variables()]
    names = [e["name"] for e in env]
    assert names == sorted(names, key=contract_order.index)
    user = dict(SAMPLE["spec"], env=[{"name": "EXTRA", "value": "1"}])
    env2 = by_kind(children(body(user)))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert env2["env"][-1] == {"name": "EXTRA", "value": "1"}  # user env comes last


def test_operator_package_carries_no_test_harness():
    package = Path(__file__).resolve().parents[2] / "operator" / "deepagent_operator"
    assert not (package / "testing.py").exists()
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "import pytest" not in text and "OperatorProcess" not in text, path
