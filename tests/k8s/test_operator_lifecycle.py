"""The operator against a real API server (kube-apiserver + etcd + controller-manager + kwok).

The operator runs as a subprocess (``python -m deepagent_operator run``) watching one
namespace; kwok makes the pods of the Deployments and StatefulSets Ready.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from deepagent_operator.kube import Kube
from tests.harness.operator_process import OperatorProcess
from tests.harness.redis_pods import RedisPods
from tests.harness.wait import wait_for

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "deepagent.yaml"
SAMPLE = ROOT / "operator" / "examples" / "deepagent.yaml"
GROUP, VERSION, PLURAL = "deepagent.dev", "v1alpha1", "deepagents"
WAIT = 60.0
RESYNC = 2.0


@pytest.fixture(scope="module")
def kube(k8s_cluster) -> Kube:
    k8s_cluster.install_crd(CRD)
    return Kube(k8s_cluster.api_client)


@pytest.fixture(scope="module")
def ns(k8s_cluster, kube):
    name = k8s_cluster.create_namespace("op")
    yield name
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def redis_pods(kube, ns, tmp_path_factory):
    """The redis-server of every Managed Redis, run from its StatefulSet's pod template."""
    work = tmp_path_factory.mktemp("redis-pods")
    with RedisPods(kube, ns, work / "hosts.json", work) as pods:
        yield pods


@pytest.fixture(scope="module")
def operator(k8s_cluster, ns, redis_pods, request, tmp_path_factory):
    # No default image and no default Temporal address: the semantic-error tests rely on it.
    op = OperatorProcess(
        k8s_cluster.kubeconfig,
        [ns],
        resync_seconds=RESYNC,
        log_dir=str(tmp_path_factory.mktemp("operator-logs")),
        hosts_file=redis_pods.hosts_file,
    )
    op.start()
    yield op
    op.stop()
    if request.session.testsfailed:
        print(f"--- operator log ({op.log_path}) ---\n{op.log_tail(200)}")


def agent(ns: str, name: str, spec: dict) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def base_spec(**kw) -> dict:
    spec = {
        "graph": "my_agents.coder:agent",
        "image": "example/agent:1",
        "temporal": {"address": "temporal:7233"},
    }
    spec.update(kw)
    return spec


def apply(k8s_cluster, obj: dict) -> None:
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def get_agent(kube: Kube, ns: str, name: str) -> dict | None:
    return kube.get("DeepAgent", ns, name)


def status_of(kube, ns, name) -> dict:
    return (get_agent(kube, ns, name) or {}).get("status") or {}


def cond(kube, ns, name, type_: str) -> dict:
    for c in status_of(kube, ns, name).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_phase(kube, ns, name, phase: str, timeout: float = WAIT) -> dict:
    return wait_for(
        f"{name} phase {phase}",
        lambda: (st := status_of(kube, ns, name)).get("phase") == phase and st,
        timeout,
    )


def template_hash(dep: dict) -> str:
    return dep["spec"]["template"]["metadata"]["annotations"]["deepagent.dev/config-hash"]


def container_env(dep: dict) -> dict:
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def create_secret(k8s_cluster, ns: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(k8s_cluster.api_client).create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        ),
    )


CHILDREN = [
    ("Deployment", "coder-worker"),
    ("StatefulSet", "coder-redis"),
    ("Service", "coder-redis"),
    ("Secret", "coder-redis-auth"),
    ("NetworkPolicy", "coder-redis"),
]


def children_versions(kube, ns) -> dict[tuple[str, str], str]:
    return {
        (kind, name): kube.get(kind, ns, name)["metadata"]["resourceVersion"]
        for kind, name in CHILDREN
    }


@pytest.fixture(scope="module")
def sample(k8s_cluster, kube, ns, operator):
    """The documented sample DeepAgent, applied with kubectl; returns its uid."""
    create_secret(k8s_cluster, ns, "model-keys", {"OPENAI_API_KEY": "sk-test-1"})
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["namespace"] = ns
    apply(k8s_cluster, doc)
    return get_agent(kube, ns, "coder")["metadata"]["uid"]


# -- Must show: sample -> children with owner refs -> Ready -> printer columns ---------------
def test_sample_creates_owned_children(kube, ns, sample):
    for kind, name in CHILDREN:
        obj = wait_for(f"{kind} {name}", lambda k=kind, n=name: kube.get(k, ns, n))
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in refs] == [
            ("DeepAgent", "coder", sample, True)
        ], f"{kind} {name}"
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "deepagent-operator"
        assert labels["deepagent.dev/agent"] == "coder"
    dep = kube.get("Deployment", ns, "coder-worker")
    env = container_env(dep)
    assert env["DEEPAGENT_GRAPH"]["value"] == "my_agents.coder:agent"
    assert env["TEMPORAL_TASK_QUEUE"]["value"] == "coder"
    assert env["REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@coder-redis.{ns}.svc:6379/0"
    assert dep["spec"]["replicas"] == 2
    secret = kube.get("Secret", ns, "coder-redis-auth")
    assert len(base64.b64decode(secret["data"]["password"])) >= 32


def test_sample_reaches_ready(kube, ns, sample):
    st = wait_phase(kube, ns, "coder", "Ready")
    assert st["ready"] == "2/2"
    assert st["workers"]["readyReplicas"] == 2
    assert st["redis"] == {
        "mode": "Managed",
        "status": "Ready",
        "ready": True,
        "endpoint": f"coder-redis.{ns}.svc:6379",
        "secretName": "coder-redis-auth",
    }
    generation = get_agent(kube, ns, "coder")["metadata"]["generation"]
    assert st["observedGeneration"] == generation
    conds = {c["type"]: c for c in st["conditions"]}
    for t in ("Ready", "SpecValid", "WorkersAvailable", "RedisReady"):
        assert conds[t]["status"] == "True", conds[t]
        assert conds[t]["reason"] and conds[t]["message"]


def test_printer_columns(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")
    out = k8s_cluster.kubectl("get", "da", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "READY", "REDIS", "GATEWAY", "AGE"]
    row = next(line.split() for line in out[1:] if line.startswith("coder "))
    assert row[:4] == ["coder", "Ready", "2/2", "Ready"]
    wide = k8s_cluster.kubectl("get", "deepagents", "-n", ns, "-o", "wide").stdout
    assert "QUEUE" in wide.splitlines()[0] and "my_agents.coder:agent" in wide
    # categories: `kubectl get all` lists DeepAgents too
    assert "deepagent.deepagent.dev/coder" in k8s_cluster.kubectl("get", "all", "-n", ns).stdout


def test_events_are_recorded(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")

    def events():
        out = k8s_cluster.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.kind=DeepAgent,involvedObject.name=coder",
            "-o",
            "json",
        ).stdout
        return json.loads(out)["items"]

    wait_for("events", lambda: {"Created", "PhaseReady"} <= {e["reason"] for e in events()})
    items = events()
    created = sorted(e["message"] for e in items if e["reason"] == "Created")
    assert created == [
        "created Deployment coder-worker",
        "created NetworkPolicy coder-redis",
        "created Secret coder-redis-auth with a generated Redis password",
        "created Service coder-redis",
        "created StatefulSet coder-redis",
    ]
    # No flapping on the way up: one first phase, never Degraded.
    assert sum(e["message"].startswith("phase - ->") for e in items) == 1, items
    assert "PhaseDegraded" not in {e["reason"] for e in items}, [
        (e["reason"], e["message"]) for e in items
    ]


# -- Must show: replicas / env / referenced Secret changes roll or scale ---------------------
def test_replicas_change_scales_without_rollout(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")
    before = template_hash(kube.get("Deployment", ns, "coder-worker"))
    k8s_cluster.kubectl(
        "patch", "da", "coder", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":3}}'
    )
    wait_for(
        "3 replicas",
        lambda: kube.get("Deployment", ns, "coder-worker")["spec"]["replicas"] == 3,
    )
    wait_for("status 3/3", lambda: status_of(kube, ns, "coder").get("ready") == "3/3")
    wait_phase(kube, ns, "coder", "Ready")
    assert template_hash(kube.get("Deployment", ns, "coder-worker")) == before  # no rollout
    k8s_cluster.kubectl(
        "patch", "da", "coder", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":2}}'
    )
    wait_for("status 2/2", lambda: status_of(kube, ns, "coder").get("ready") == "2/2")


def test_env_change_rolls_workers(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")
    dep = kube.get("Deployment", ns, "coder-worker")
    before, gen = template_hash(dep), dep["metadata"]["generation"]
    patch = {"spec": {"env": [{"name": "LOG_LEVEL", "value": "debug"}]}}
    k8s_cluster.kubectl("patch", "da", "coder", "-n", ns, "--type=merge", "-p", json.dumps(patch))
    dep = wait_for(
        "env in template",
        lambda: (
            (d := kube.get("Deployment", ns, "coder-worker"))
            and "LOG_LEVEL" in container_env(d)
            and d
        ),
    )
    assert container_env(dep)["LOG_LEVEL"]["value"] == "debug"
    assert template_hash(dep) != before
    assert dep["metadata"]["generation"] > gen
    wait_phase(kube, ns, "coder", "Ready")


def test_referenced_secret_change_rolls_workers(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")
    before = template_hash(kube.get("Deployment", ns, "coder-worker"))
    client.CoreV1Api(k8s_cluster.api_client).patch_namespaced_secret(
        "model-keys", ns, {"data": {"OPENAI_API_KEY": base64.b64encode(b"sk-test-2").decode()}}
    )
    after = wait_for(
        "new config hash after the Secret changed",
        lambda: (h := template_hash(kube.get("Deployment", ns, "coder-worker"))) != before and h,
        timeout=RESYNC * 10,
    )
    assert status_of(kube, ns, "coder")["workers"].get("configHash") in (after, before)
    wait_phase(kube, ns, "coder", "Ready")


def test_referenced_configmap_change_rolls_workers(k8s_cluster, kube, ns, operator):
    core = client.CoreV1Api(k8s_cluster.api_client)
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="agent-cfg"), data={"M": "a"})
    )
    spec = base_spec(
        env=[
            {
                "name": "MODEL",
                "valueFrom": {"configMapKeyRef": {"name": "agent-cfg", "key": "M"}},
            }
        ]
    )
    apply(k8s_cluster, agent(ns, "cm", spec))
    wait_phase(kube, ns, "cm", "Ready")
    before = template_hash(kube.get("Deployment", ns, "cm-worker"))
    core.patch_namespaced_config_map("agent-cfg", ns, {"data": {"M": "b"}})
    wait_for(
        "new config hash after the ConfigMap changed",
        lambda: template_hash(kube.get("Deployment", ns, "cm-worker")) != before,
        timeout=RESYNC * 10,
    )
    k8s_cluster.kubectl("delete", "da", "cm", "-n", ns)


# -- Must show: operator restart with nothing changed writes nothing -------------------------
def test_restart_leaves_children_untouched(kube, ns, sample, operator):
    wait_phase(kube, ns, "coder", "Ready")
    time.sleep(RESYNC * 2)  # let any in-flight rollout settle
    wait_phase(kube, ns, "coder", "Ready")
    before = children_versions(kube, ns)
    agent_status = status_of(kube, ns, "coder")
    operator.restart()
    # The resume handler and several resync rounds have run by then.
    wait_for("resyncs", lambda: operator.metrics().get("resyncs_total", 0) >= 2, RESYNC * 10)
    assert operator.metrics().get("reconcile_total", 0) >= 3
    assert children_versions(kube, ns) == before
    metrics = operator.metrics()
    assert metrics.get("child_writes_total", 0) == 0, metrics
    assert metrics.get("status_writes_total", 0) == 0, metrics
    assert status_of(kube, ns, "coder") == agent_status


# -- drift repair ----------------------------------------------------------------------------
def test_deleted_child_is_restored(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")
    old_uid = kube.get("Service", ns, "coder-redis")["metadata"]["uid"]
    k8s_cluster.kubectl("delete", "service", "coder-redis", "-n", ns)
    wait_for(
        "Service restored",
        lambda: (s := kube.get("Service", ns, "coder-redis")) and s["metadata"]["uid"] != old_uid,
        timeout=RESYNC * 5,
    )


def test_hand_edited_child_is_restored(k8s_cluster, kube, ns, sample):
    wait_phase(kube, ns, "coder", "Ready")
    k8s_cluster.kubectl("scale", "deployment", "coder-worker", "-n", ns, "--replicas=5")
    wait_for(
        "replicas restored to 2",
        lambda: kube.get("Deployment", ns, "coder-worker")["spec"]["replicas"] == 2,
        timeout=RESYNC * 5,
    )
    k8s_cluster.kubectl("label", "networkpolicy", "coder-redis", "-n", ns, "deepagent.dev/agent-")
    wait_for(
        "label restored",
        lambda: (
            kube.get("NetworkPolicy", ns, "coder-redis")["metadata"]["labels"].get(
                "deepagent.dev/agent"
            )
            == "coder"
        ),
        timeout=RESYNC * 10,
    )


# -- semantic errors -------------------------------------------------------------------------
def test_missing_secret_is_a_condition_then_recovers(k8s_cluster, kube, ns, operator):
    spec = base_spec(envFrom=[{"secretRef": {"name": "late-keys"}}])
    apply(k8s_cluster, agent(ns, "late", spec))
    c = wait_for(
        "SpecValid=False",
        lambda: (c := cond(kube, ns, "late", "SpecValid")) and c["status"] == "False" and c,
    )
    assert c["reason"] == "SecretNotFound"
    assert "spec.envFrom[0].secretRef.name" in c["message"]
    assert "create the Secret" in c["message"]
    assert status_of(kube, ns, "late")["phase"] == "Failed"
    assert kube.get("Deployment", ns, "late-worker") is None
    ready = cond(kube, ns, "late", "Ready")
    assert ready["status"] == "False" and "late-keys" in ready["message"]
    # The operator keeps running (no crash loop) and recovers once the Secret exists.
    assert operator.proc.poll() is None
    create_secret(k8s_cluster, ns, "late-keys", {"K": "v"})
    wait_phase(kube, ns, "late", "Ready", timeout=WAIT)
    assert cond(kube, ns, "late", "SpecValid")["status"] == "True"
    k8s_cluster.kubectl("delete", "da", "late", "-n", ns)


def test_no_image_and_no_default_is_a_condition(k8s_cluster, kube, ns, operator):
    spec = base_spec()
    del spec["image"]
    apply(k8s_cluster, agent(ns, "noimage", spec))
    c = wait_for(
        "SpecValid=False",
        lambda: (c := cond(kube, ns, "noimage", "SpecValid")) and c["status"] == "False" and c,
    )
    assert c["reason"] == "ImageNotSet"
    assert c["message"].startswith("spec.image:")
    assert "set spec.image" in c["message"]
    assert status_of(kube, ns, "noimage")["phase"] == "Failed"

    def warning_event():
        out = k8s_cluster.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.name=noimage,type=Warning",
            "-o",
            "json",
        ).stdout
        return [e for e in json.loads(out)["items"] if e["reason"] == "ImageNotSet"]

    wait_for("Warning event", warning_event)
    k8s_cluster.kubectl(
        "patch", "da", "noimage", "-n", ns, "--type=merge", "-p", '{"spec":{"image":"x/y:1"}}'
    )
    wait_phase(kube, ns, "noimage", "Ready")
    k8s_cluster.kubectl("delete", "da", "noimage", "-n", ns)


def test_no_temporal_address_is_a_condition(k8s_cluster, kube, ns, operator):
    spec = base_spec()
    del spec["temporal"]
    apply(k8s_cluster, agent(ns, "notemporal", spec))
    c = wait_for(
        "SpecValid=False",
        lambda: (c := cond(kube, ns, "notemporal", "SpecValid")) and c["status"] == "False" and c,
    )
    assert c["reason"] == "TemporalAddressNotSet"
    assert "spec.temporal.address" in c["message"]
    k8s_cluster.kubectl("delete", "da", "notemporal", "-n", ns)


# -- autoscaling and redis modes -------------------------------------------------------------
def test_autoscaling_creates_hpa_and_back(k8s_cluster, kube, ns, operator):
    spec = base_spec(
        autoscaling={"minReplicas": 2, "maxReplicas": 4}, resources={"requests": {"cpu": "100m"}}
    )
    apply(k8s_cluster, agent(ns, "auto", spec))
    hpa = wait_for("HPA", lambda: kube.get("HorizontalPodAutoscaler", ns, "auto-worker"))
    assert hpa["spec"]["maxReplicas"] == 4
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "auto"
    dep = wait_for("Deployment", lambda: kube.get("Deployment", ns, "auto-worker"))
    managers = {
        m["manager"]
        for m in dep["metadata"].get("managedFields", [])
        if "f:replicas" in json.dumps(m.get("fieldsV1", {}))
    }
    assert "deepagent-operator" not in managers  # the HPA owns replicas
    k8s_cluster.kubectl(
        "patch",
        "da",
        "auto",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"autoscaling":null,"replicas":1}}',
    )
    wait_for("HPA deleted", lambda: kube.get("HorizontalPodAutoscaler", ns, "auto-worker") is None)
    wait_for(
        "replicas 1", lambda: kube.get("Deployment", ns, "auto-worker")["spec"]["replicas"] == 1
    )
    k8s_cluster.kubectl("delete", "da", "auto", "-n", ns)


def test_disabling_redis_removes_it_but_keeps_the_password(k8s_cluster, kube, ns, operator):
    apply(k8s_cluster, agent(ns, "toggle", base_spec(streaming={"redis": {"mode": "Managed"}})))
    wait_phase(kube, ns, "toggle", "Ready")
    password = kube.get("Secret", ns, "toggle-redis-auth")["data"]["password"]
    k8s_cluster.kubectl(
        "patch",
        "da",
        "toggle",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"streaming":{"redis":{"mode":"Disabled"}}}}',
    )
    wait_for("StatefulSet gone", lambda: kube.get("StatefulSet", ns, "toggle-redis") is None)
    wait_for("Service gone", lambda: kube.get("Service", ns, "toggle-redis") is None)
    wait_for("NetworkPolicy gone", lambda: kube.get("NetworkPolicy", ns, "toggle-redis") is None)
    dep = wait_for(
        "REDIS_URL removed",
        lambda: (
            (d := kube.get("Deployment", ns, "toggle-worker"))
            and "REDIS_URL" not in container_env(d)
            and d
        ),
    )
    assert dep is not None
    st = wait_for(
        "redis Disabled in status",
        lambda: (
            (s := status_of(kube, ns, "toggle")).get("redis", {}).get("status") == "Disabled" and s
        ),
    )
    assert "endpoint" not in st["redis"]
    k8s_cluster.kubectl(
        "patch",
        "da",
        "toggle",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"streaming":{"redis":{"mode":"Managed"}}}}',
    )
    wait_phase(kube, ns, "toggle", "Ready")
    assert kube.get("Secret", ns, "toggle-redis-auth")["data"]["password"] == password
    k8s_cluster.kubectl("delete", "da", "toggle", "-n", ns)


def test_pvc_storage_and_immutable_change_is_a_condition(k8s_cluster, kube, ns, operator):
    redis = {"mode": "Managed", "storage": {"type": "PersistentVolumeClaim", "size": "2Gi"}}
    apply(k8s_cluster, agent(ns, "pvc", base_spec(streaming={"redis": redis})))
    sts = wait_for("StatefulSet", lambda: kube.get("StatefulSet", ns, "pvc-redis"))
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "--appendonly" in sts["spec"]["template"]["spec"]["containers"][0]["args"]
    patch = {"spec": {"streaming": {"redis": {"storage": {"size": "5Gi"}}}}}
    k8s_cluster.kubectl("patch", "da", "pvc", "-n", ns, "--type=merge", "-p", json.dumps(patch))
    c = wait_for(
        "SpecValid=False",
        lambda: (c := cond(kube, ns, "pvc", "SpecValid")) and c["status"] == "False" and c,
    )
    assert c["reason"] == "ImmutableField"
    assert c["message"].startswith("spec.streaming.redis.storage:")
    assert "delete StatefulSet pvc-redis" in c["message"]
    assert operator.proc.poll() is None
    patch["spec"]["streaming"]["redis"]["storage"]["size"] = "2Gi"
    k8s_cluster.kubectl("patch", "da", "pvc", "-n", ns, "--type=merge", "-p", json.dumps(patch))
    wait_for("SpecValid=True", lambda: cond(kube, ns, "pvc", "SpecValid").get("status") == "True")
    k8s_cluster.kubectl("delete", "da", "pvc", "-n", ns)


# -- Must show: delete -> garbage collection (runs last in this module) ----------------------
def test_delete_garbage_collects_children(k8s_cluster, kube, ns, sample):
    k8s_cluster.kubectl("delete", "da", "coder", "-n", ns, "--wait=true", "--timeout=60s")
    for kind, name in CHILDREN:
        wait_for(f"{kind} {name} collected", lambda k=kind, n=name: kube.get(k, ns, n) is None)
    pods = client.CoreV1Api(k8s_cluster.api_client).list_namespaced_pod(
        ns, label_selector="deepagent.dev/agent=coder"
    )
    wait_for(
        "pods collected",
        lambda: (
            not client.CoreV1Api(k8s_cluster.api_client)
            .list_namespaced_pod(ns, label_selector="deepagent.dev/agent=coder")
            .items
        ),
    )
    assert pods is not None
