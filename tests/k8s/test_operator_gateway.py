"""spec.gateway on a real API server (kube-apiserver + etcd + controller-manager + kwok).

Enabling the gateway makes a Deployment, a Service and an API key Secret `<name>-gateway*`,
all controlled by the DeepAgent, with the env, probes and labels the pods need; a user's
``apiKeySecretRef`` replaces the generated Secret; disabling removes the Deployment and the
Service (the key stays, the workers do not roll); a Service `<name>-gateway` that is not the
DeepAgent's is never touched and the DeepAgent says so. The API server itself refuses a
gateway whose Service could not be named after the DeepAgent, and an optional key.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from deepagent_operator.kube import Kube
from deepagent_temporal.contract import WorkerEnv
from tests.harness.operator_process import OperatorProcess
from tests.harness.redis_pods import RedisPods
from tests.harness.wait import wait_for

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "deepagent.yaml"
RESYNC = 2.0
N = WorkerEnv.name
HASH = "deepagent.dev/config-hash"


@pytest.fixture(scope="module")
def kube(k8s_cluster) -> Kube:
    k8s_cluster.install_crd(CRD)
    return Kube(k8s_cluster.api_client)


@pytest.fixture(scope="module")
def ns(k8s_cluster, kube):
    name = k8s_cluster.create_namespace("gateway")
    yield name
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(k8s_cluster, kube, ns, request, tmp_path_factory):
    work = tmp_path_factory.mktemp("gateway-op")
    with RedisPods(kube, ns, work / "hosts.json", work) as pods:
        op = OperatorProcess(
            k8s_cluster.kubeconfig,
            [ns],
            default_image="example/runtime:1",
            default_temporal_address="temporal:7233",
            resync_seconds=RESYNC,
            log_dir=str(work),
            hosts_file=pods.hosts_file,
        )
        op.start()
        yield op
        op.stop()
        if request.session.testsfailed:
            print(f"--- operator log ({op.log_path}) ---\n{op.log_tail(200)}")


def apply(k8s_cluster, ns: str, name: str, spec: dict, check: bool = True):
    agent = {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"graph": "pkg.mod:agent", **spec},
    }
    return k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(agent), check=check)


def patch(k8s_cluster, ns: str, name: str, spec: dict) -> None:
    body = json.dumps({"spec": spec})
    k8s_cluster.kubectl("patch", "da", name, "-n", ns, "--type=merge", "-p", body)


def status(kube, ns, name) -> dict:
    return (kube.get("DeepAgent", ns, name) or {}).get("status") or {}


def cond(kube, ns, name, type_) -> dict:
    conditions = status(kube, ns, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def controller_uid(obj: dict) -> str | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r["uid"] for r in refs if r.get("controller")), None)


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_enable_creates_owned_children_with_env_probes_and_labels(k8s_cluster, kube, ns, operator):
    spec = {
        "taskQueue": "gw-q",
        "streaming": {"redis": {"mode": "Managed"}},
        "env": [{"name": "MODEL", "value": "m"}],
        "gateway": {"enabled": True},
    }
    apply(k8s_cluster, ns, "gw", spec)
    wait_for(
        "Ready", lambda: status(kube, ns, "gw").get("phase") == "Ready", logs=operator.log_tail
    )
    uid = kube.get("DeepAgent", ns, "gw")["metadata"]["uid"]
    dep = wait_for("gateway Deployment", lambda: kube.get("Deployment", ns, "gw-gateway"))
    svc = kube.get("Service", ns, "gw-gateway")
    secret = kube.get("Secret", ns, "gw-gateway-api-key")
    for obj in (dep, svc, secret):
        assert controller_uid(obj) == uid, obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "deepagent-operator"
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    assert len(key) >= 40

    pod = dep["spec"]["template"]
    [c] = pod["spec"]["containers"]
    assert c["command"] == ["deepagent-temporal", "serve"]
    assert c["image"] == "example/runtime:1"
    env = {e["name"]: e for e in c["env"]}
    assert env[N("graph")]["value"] == "pkg.mod:agent"
    assert env[N("temporal_task_queue")]["value"] == "gw-q"
    assert env[N("temporal_address")]["value"] == "temporal:7233"
    assert env[N("redis_password")]["valueFrom"]["secretKeyRef"] == {
        "name": "gw-redis-auth",
        "key": "password",
    }
    assert env[N("redis_url")]["value"].endswith("@gw-redis." + ns + ".svc:6379/0")
    assert env["MODEL"]["value"] == "m"
    assert env[N("gateway_port")]["value"] == "2024"
    assert env[N("gateway_host")]["value"] == "0.0.0.0"
    keys_file = env[N("gateway_api_keys_file")]["value"]
    mount = next(m for m in c["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True and keys_file.endswith("/api-key")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "gw-gateway-api-key"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/ok" and c[probe]["httpGet"]["port"] == "http"
    assert c["ports"][0]["containerPort"] == 2024
    labels = pod["metadata"]["labels"]
    assert labels["deepagent.dev/redis-client"] == "gw"
    assert HASH in pod["metadata"]["annotations"]
    worker = kube.get("Deployment", ns, "gw-worker")
    assert pod["spec"]["securityContext"] == worker["spec"]["template"]["spec"]["securityContext"]
    # the Redis NetworkPolicy admits the gateway pods
    policy = kube.get("NetworkPolicy", ns, "gw-redis")
    peers = policy["spec"]["ingress"][0]["from"]
    assert any(selects(p.get("podSelector", {}).get("matchLabels", {}), labels) for p in peers)
    # the Service reaches the gateway pods on their port
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert selects(svc["spec"]["selector"], labels)
    # status and the printer column
    wait_for(
        "gateway pods ready (kwok)",
        lambda: (status(kube, ns, "gw").get("gateway") or {}).get("ready") == "1/1",
        logs=operator.log_tail,
    )
    gateway = status(kube, ns, "gw")["gateway"]
    endpoint = f"http://gw-gateway.{ns}.svc:80"
    assert gateway["endpoint"] == endpoint
    assert gateway["apiKeySecretRef"] == {"name": "gw-gateway-api-key", "key": "api-key"}
    out = k8s_cluster.kubectl("get", "da", "gw", "-n", ns).stdout.splitlines()
    assert out[0].split()[4] == "GATEWAY" and out[1].split()[4] == endpoint

    # NodePort and back: the API server's own nodePort goes away with the type
    patch(k8s_cluster, ns, "gw", {"gateway": {"service": {"type": "NodePort"}}})
    wait_for(
        "NodePort",
        lambda: kube.get("Service", ns, "gw-gateway")["spec"]["ports"][0].get("nodePort"),
        logs=operator.log_tail,
    )
    patch(k8s_cluster, ns, "gw", {"gateway": {"service": {"type": "ClusterIP", "port": 8080}}})
    wait_for(
        "ClusterIP on 8080",
        lambda: (
            kube.get("Service", ns, "gw-gateway")["spec"]["ports"][0]
            == {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
        ),
        logs=operator.log_tail,
    )
    assert cond(kube, ns, "gw", "SpecValid")["status"] == "True"
    assert status(kube, ns, "gw")["gateway"]["endpoint"] == f"http://gw-gateway.{ns}.svc:8080"

    # disable: Deployment and Service go, the key stays, the workers do not roll
    worker_hash = worker["spec"]["template"]["metadata"]["annotations"][HASH]
    patch(k8s_cluster, ns, "gw", {"gateway": {"enabled": False}})
    for kind in ("Deployment", "Service"):
        wait_for(
            f"gateway {kind} deleted",
            lambda k=kind: kube.get(k, ns, "gw-gateway") is None,
            logs=operator.log_tail,
        )
    wait_for("status.gateway gone", lambda: "gateway" not in status(kube, ns, "gw"))
    assert kube.get("Secret", ns, "gw-gateway-api-key")["data"] == secret["data"]
    worker = kube.get("Deployment", ns, "gw-worker")
    assert worker["spec"]["template"]["metadata"]["annotations"][HASH] == worker_hash
    # enabled again: the same key
    patch(k8s_cluster, ns, "gw", {"gateway": {"enabled": True}})
    wait_for("gateway back", lambda: kube.get("Deployment", ns, "gw-gateway"))
    assert kube.get("Secret", ns, "gw-gateway-api-key")["data"] == secret["data"]
    k8s_cluster.kubectl("delete", "da", "gw", "-n", ns)


def test_users_key_secret_is_mounted_and_none_is_generated(k8s_cluster, kube, ns, operator):
    gateway = {"enabled": True, "apiKeySecretRef": {"name": "team-keys", "key": "keys"}}
    apply(k8s_cluster, ns, "mine", {"gateway": gateway})
    c = wait_for(
        "SecretNotFound",
        lambda: (c := cond(kube, ns, "mine", "SpecValid")).get("reason") == "SecretNotFound" and c,
        logs=operator.log_tail,
    )
    assert "team-keys" in c["message"] and "spec.gateway.apiKeySecretRef" in c["message"]
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-keys", "namespace": ns},
            "data": {"keys": base64.b64encode(b"k-one\nk-two\n").decode()},
        }
    )
    dep = wait_for(
        "gateway Deployment", lambda: kube.get("Deployment", ns, "mine-gateway"), timeout=60
    )
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    [c] = dep["spec"]["template"]["spec"]["containers"]
    mount = next(m for m in c["volumeMounts"] if volumes[m["name"]].get("secret"))
    assert volumes[mount["name"]]["secret"]["secretName"] == "team-keys"
    keys_file = next(e["value"] for e in c["env"] if e["name"] == N("gateway_api_keys_file"))
    assert keys_file == mount["mountPath"] + "/keys"
    assert kube.get("Secret", ns, "mine-gateway-api-key") is None
    # the pods the controller made from it mount the user's Secret
    selector = "app.kubernetes.io/component=gateway,deepagent.dev/agent=mine"
    pods = wait_for(
        "gateway pods",
        lambda: json.loads(
            k8s_cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
        )["items"],
    )
    pod_volumes = {v["name"]: v for v in pods[0]["spec"]["volumes"]}
    assert pod_volumes[mount["name"]]["secret"]["secretName"] == "team-keys"
    assert (status(kube, ns, "mine").get("gateway") or {}).get("apiKeySecretRef") == {
        "name": "team-keys",
        "key": "keys",
    }
    # a new key in the user's Secret rolls the gateway (at the next resync)
    before = dep["spec"]["template"]["metadata"]["annotations"][HASH]
    k8s_cluster.kubectl(
        "patch", "secret", "team-keys", "-n", ns, "--type=merge",
        "-p", json.dumps({"data": {"keys": base64.b64encode(b"k-three\n").decode()}}),
    )  # fmt: skip
    wait_for(
        "the gateway rolls",
        lambda: (
            kube.get("Deployment", ns, "mine-gateway")["spec"]["template"]["metadata"][
                "annotations"
            ][HASH]
            != before
        ),
        timeout=30,
        logs=operator.log_tail,
    )
    assert kube.get("Secret", ns, "mine-gateway-api-key") is None
    k8s_cluster.kubectl("delete", "da", "mine", "-n", ns)


def fingerprint(obj: dict) -> dict:
    meta = {
        k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")
    }
    fields = sorted(
        (m["manager"], m["operation"], json.dumps(m.get("fieldsV1"), sort_keys=True))
        for m in obj["metadata"].get("managedFields") or []
        if m.get("subresource") != "status"
    )
    return {"metadata": meta, "fields": fields, "spec": obj["spec"]}


def test_a_foreign_gateway_service_is_untouched_and_named(k8s_cluster, kube, ns, operator):
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken-gateway", "namespace": ns},
        "spec": {"selector": {"app": "their-api"}, "ports": [{"port": 80}]},
    }
    k8s_cluster.kubectl("create", "-f", "-", input=json.dumps(theirs))
    before = fingerprint(kube.get("Service", ns, "taken-gateway"))
    apply(k8s_cluster, ns, "taken", {"gateway": {"enabled": True}})
    c = wait_for(
        "ChildNotOwned",
        lambda: (c := cond(kube, ns, "taken", "SpecValid")).get("reason") == "ChildNotOwned" and c,
        logs=operator.log_tail,
    )
    assert (
        "Service taken-gateway already exists and is not controlled by this DeepAgent"
        in (c["message"])
    )
    assert status(kube, ns, "taken")["phase"] == "Failed"
    time.sleep(RESYNC * 1.5)  # resyncs and kopf's retries have run meanwhile
    live = kube.get("Service", ns, "taken-gateway")
    assert fingerprint(live) == before and not live["metadata"].get("ownerReferences")
    for kind, name in [
        ("Deployment", "taken-gateway"),
        ("Secret", "taken-gateway-api-key"),
        ("Deployment", "taken-worker"),
    ]:
        assert kube.get(kind, ns, name) is None, (kind, name)
    # the name is freed: the agent recovers
    kube.delete("Service", ns, "taken-gateway")
    wait_for(
        "the gateway Service is the agent's",
        lambda: (
            (svc := kube.get("Service", ns, "taken-gateway")) is not None
            and controller_uid(svc) == kube.get("DeepAgent", ns, "taken")["metadata"]["uid"]
        ),
        logs=operator.log_tail,
    )
    wait_for("SpecValid", lambda: cond(kube, ns, "taken", "SpecValid").get("status") == "True")
    k8s_cluster.kubectl("delete", "da", "taken", "-n", ns)


@pytest.mark.parametrize(
    "name,gateway,message",
    [
        ("dotted.name", {"enabled": True}, "spec.gateway.enabled the name must be a DNS-1035"),
        (
            "optkey",
            {"enabled": True, "apiKeySecretRef": {"name": "k", "key": "k", "optional": True}},
            "optional: true is not allowed",
        ),
        ("badtype", {"service": {"type": "ExternalName"}}, "spec.gateway.service.type"),
    ],
)
def test_the_api_server_refuses_impossible_gateways(k8s_cluster, kube, ns, name, gateway, message):
    out = apply(k8s_cluster, ns, name, {"gateway": gateway}, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    # the same name without a gateway is fine (only the Service needs a DNS-1035 label)
    if name == "dotted.name":
        apply(k8s_cluster, ns, name, {"gateway": {"enabled": False}})
        k8s_cluster.kubectl("delete", "da", name, "-n", ns)
