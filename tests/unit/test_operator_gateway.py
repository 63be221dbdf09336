"""spec.gateway: the model, the pure builders (Deployment, Service, API key Secret), the plan,
the status, and the reconciler's decisions on the in-memory store."""

from __future__ import annotations

import base64
import copy

import pydantic
import pytest

from deepagent_operator.children import (
    GATEWAY_API_KEY,
    GATEWAY_COMMAND,
    GATEWAY_KEYS_MOUNT,
    HASH_ANNOTATION,
    REDIS_CLIENT_LABEL,
    build_children,
    build_gateway_secret,
    build_redis_network_policy,
    config_hash,
    gateway_config_hash,
)
from deepagent_operator.config import OperatorConfig
from deepagent_operator.crd import PRINTER_COLUMNS, build_crd
from deepagent_operator.gateway_auth import has_a_key
from deepagent_operator.model import SpecError, check_name, format_validation_error, parse_spec
from deepagent_operator.plan import StatusInputs, plan_status, unwanted_children, wanted_children
from deepagent_operator.reconcile import Reconciler
from deepagent_temporal.contract import WorkerEnv
from tests.unit.test_operator_reconciler import MemoryStore, agent

CONFIG = OperatorConfig(default_image="ghcr.io/example/runtime:0.1", redis_image="redis:7.4")
BASE = {
    "graph": "pkg.mod:agent",
    "temporal": {"address": "temporal:7233"},
    "taskQueue": "coder-q",
    "streaming": {"redis": {"mode": "Managed"}},
    "gateway": {"enabled": True},
}
N = WorkerEnv.name


def body(spec=None, name="coder", ns="agents"):
    return {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns, "uid": "uid-123", "generation": 1},
        "spec": copy.deepcopy(BASE if spec is None else spec),
    }


def built(spec=None, gateway_hash="g1"):
    b = body(spec)
    out = build_children(b, parse_spec(b["spec"]), CONFIG, "w1", None, gateway_hash)
    return {(o["kind"], o["metadata"]["name"]): o for o in out}


def pod(dep):
    return dep["spec"]["template"]["spec"]


def env_of(dep):
    return pod(dep)["containers"][0]["env"]


def env_map(dep):
    return {e["name"]: e for e in env_of(dep)}


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


# -- the model ----------------------------------------------------------------------------------
def test_defaults():
    spec = parse_spec({"graph": "a:b", "gateway": {}})
    g = spec.gateway
    assert (g.enabled, g.replicas, g.api_key_secret_ref) == (False, 1, None)
    assert (g.service.type, g.service.port) == ("ClusterIP", 80)
    assert parse_spec({"graph": "a:b"}).gateway is None
    # the CRD defaults nothing for an absent gateway: existing agents' specs do not change
    gw_schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "default" not in gw_schema["properties"]["spec"]["properties"]["gateway"]


@pytest.mark.parametrize(
    "gateway,text",
    [
        ({"apiKeySecretRef": {"name": "k", "key": "k", "optional": True}}, "optional: true"),
        ({"service": {"type": "ExternalName"}}, "spec.gateway.service.type"),
        ({"service": {"port": 0}}, "spec.gateway.service.port"),
        ({"replicas": -1}, "spec.gateway.replicas"),
        ({"service": {"annotations": {"bad key!": "x"}}}, "spec.gateway.service.annotations"),
        ({"enable": True}, "spec.gateway.enable"),
    ],
)
def test_invalid_gateways_name_the_field(gateway, text):
    with pytest.raises(pydantic.ValidationError) as exc:
        parse_spec({"graph": "a:b", "gateway": gateway})
    field, message = format_validation_error(exc.value)
    assert text in f"{field}: {message}"


def test_the_service_name_needs_a_dns1035_name():
    spec = parse_spec({"graph": "a:b", "gateway": {"enabled": True}})
    check_name("coder-1", spec)
    with pytest.raises(SpecError, match="DNS-1035") as exc:
        check_name("coder.v1", spec)
    assert exc.value.reason == "InvalidName"
    check_name("coder.v1", parse_spec({"graph": "a:b", "gateway": {"enabled": False}}))


# -- the Deployment -----------------------------------------------------------------------------
def test_deployment_runs_serve_with_the_workers_env_and_its_own():
    children = built()
    dep = children[("Deployment", "coder-gateway")]
    worker = children[("Deployment", "coder-worker")]
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert dep["metadata"]["namespace"] == "agents"
    [c] = pod(dep)["containers"]
    assert c["command"] == GATEWAY_COMMAND == ["deepagent-temporal", "serve"]
    assert c["image"] == "ghcr.io/example/runtime:0.1"
    env = env_map(dep)
    # what a worker needs to reach runs: the same entries as the worker's, in the same order
    names = [e["name"] for e in env_of(dep)]
    worker_names = [e["name"] for e in env_of(worker)]
    assert names[: len(worker_names)] == worker_names
    for e in env_of(worker):
        assert env[e["name"]] == e
    assert env[N("graph")]["value"] == "pkg.mod:agent"
    assert env[N("temporal_task_queue")]["value"] == "coder-q"
    assert env[N("temporal_address")]["value"] == "temporal:7233"
    assert env[N("redis_password")]["valueFrom"]["secretKeyRef"] == {
        "name": "coder-redis-auth",
        "key": "password",
    }
    assert names.index(N("redis_password")) < names.index(N("redis_url"))  # $(...) expands
    assert env[N("redis_url")]["value"] == (
        f"redis://:$({N('redis_password')})@coder-redis.agents.svc:6379/0"
    )
    # and its own
    assert env[N("gateway_port")]["value"] == "2024"
    assert env[N("gateway_host")]["value"] == "0.0.0.0"
    assert env[N("gateway_api_keys_file")]["value"] == f"{GATEWAY_KEYS_MOUNT}/{GATEWAY_API_KEY}"
    assert "envFrom" not in c  # the workers have none either


def test_probes_ports_labels_and_security():
    children = built()
    dep = children[("Deployment", "coder-gateway")]
    worker = children[("Deployment", "coder-worker")]
    [c] = pod(dep)["containers"]
    assert c["ports"] == [{"name": "http", "containerPort": 2024, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/ok", "port": "http"}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[REDIS_CLIENT_LABEL] == "coder"
    assert selects(dep["spec"]["selector"], labels)
    assert not selects(worker["spec"]["selector"], labels)  # not a worker pod
    assert not selects(dep["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
    assert pod(dep)["securityContext"] == pod(worker)["securityContext"]
    assert c["securityContext"] == pod(worker)["containers"][0]["securityContext"]
    assert pod(dep)["automountServiceAccountToken"] is False
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["template"]["metadata"]["annotations"] == {HASH_ANNOTATION: "g1"}


def test_the_redis_network_policy_admits_gateway_pods():
    b = body()
    dep = built()[("Deployment", "coder-gateway")]
    policy = build_redis_network_policy(b, CONFIG)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    peers = policy["spec"]["ingress"][0]["from"]
    assert any("podSelector" in p and selects(p["podSelector"], labels) for p in peers)


def test_the_generated_key_is_mounted_read_only_as_the_keys_file():
    dep = built()[("Deployment", "coder-gateway")]
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    [c] = pod(dep)["containers"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == GATEWAY_KEYS_MOUNT)
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["secret"] == {
        "secretName": "coder-gateway-api-key",
        "items": [{"key": GATEWAY_API_KEY, "path": GATEWAY_API_KEY}],
        "defaultMode": 0o440,
    }
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", GATEWAY_KEYS_MOUNT}


def test_a_users_key_secret_is_mounted_instead():
    spec = copy.deepcopy(BASE)
    spec["gateway"]["apiKeySecretRef"] = {"name": "team-keys", "key": "keys.txt"}
    dep = built(spec)[("Deployment", "coder-gateway")]
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "team-keys"
    assert volumes["api-keys"]["secret"]["items"] == [{"key": "keys.txt", "path": "keys.txt"}]
    assert env_map(dep)[N("gateway_api_keys_file")]["value"] == f"{GATEWAY_KEYS_MOUNT}/keys.txt"


def test_spec_env_tls_payload_storage_and_placement_carry_over():
    spec = copy.deepcopy(BASE)
    spec.update(
        env=[
            {"name": "MODEL", "value": "m"},
            {"name": N("gateway_port"), "value": "9999"},  # the operator's port wins
        ],
        temporal={"address": "temporal:7233", "tls": {"secretName": "tls"}},
        payloadStorage={"s3": {"bucket": "agent-payloads"}},
        imagePullSecrets=[{"name": "pull"}],
        nodeSelector={"pool": "agents"},
        serviceAccountName="agents",
        resources={"requests": {"cpu": "1"}},
    )
    spec["gateway"].update(replicas=3, resources={"requests": {"cpu": "100m"}})
    children = built(spec)
    dep, worker = (
        children[("Deployment", "coder-gateway")],
        children[("Deployment", "coder-worker")],
    )
    names = [e["name"] for e in env_of(dep)]
    assert len(names) == len(set(names))  # one entry per name (server-side apply needs it)
    env = env_map(dep)
    assert env["MODEL"]["value"] == "m" and env[N("gateway_port")]["value"] == "2024"
    assert env[N("payload_s3_bucket")]["value"] == "agent-payloads"
    assert env[N("temporal_tls_cert")] == env_map(worker)[N("temporal_tls_cert")]
    [c] = pod(dep)["containers"]
    assert {
        "name": "temporal-tls",
        "mountPath": "/etc/deepagent/temporal-tls",
        "readOnly": True,
    } in (c["volumeMounts"])
    assert c["resources"] == {"requests": {"cpu": "100m"}}  # its own, not the workers'
    assert dep["spec"]["replicas"] == 3
    p = pod(dep)
    assert p["imagePullSecrets"] == [{"name": "pull"}]
    assert p["nodeSelector"] == {"pool": "agents"}
    assert p["serviceAccountName"] == "agents" and "automountServiceAccountToken" not in p


def test_env_from_follows_the_workers_unless_turned_off():
    """The gateway imports the same graph module: a module that builds its model at import
    (``ChatOpenAI()`` raises without its key) would crash-loop the gateway without envFrom."""
    spec = copy.deepcopy(BASE)
    spec["envFrom"] = [{"secretRef": {"name": "model-keys"}}]
    children = built(spec)
    [gateway] = pod(children[("Deployment", "coder-gateway")])["containers"]
    [worker] = pod(children[("Deployment", "coder-worker")])["containers"]
    assert gateway["envFrom"] == worker["envFrom"] == [{"secretRef": {"name": "model-keys"}}]
    spec["gateway"]["workerEnvFrom"] = False
    [gateway] = pod(built(spec)[("Deployment", "coder-gateway")])["containers"]
    assert "envFrom" not in gateway  # a template change: the gateway rolls, the workers not
    assert "envFrom" in pod(built(spec)[("Deployment", "coder-worker")])["containers"][0]


# -- the Service and the Secret -------------------------------------------------------------------
def test_service_type_port_and_target():
    spec = copy.deepcopy(BASE)
    spec["gateway"]["service"] = {
        "type": "LoadBalancer",
        "port": 8443,
        "annotations": {"example.com/internal": "true"},
    }
    children = built(spec)
    svc = children[("Service", "coder-gateway")]
    dep = children[("Deployment", "coder-gateway")]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8443, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["metadata"]["annotations"] == {"example.com/internal": "true"}
    assert selects(
        {"matchLabels": svc["spec"]["selector"]}, dep["spec"]["template"]["metadata"]["labels"]
    )
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    default = built()[("Service", "coder-gateway")]
    assert default["spec"]["type"] == "ClusterIP" and default["spec"]["ports"][0]["port"] == 80
    assert "annotations" not in default["metadata"]


def test_generated_secret_is_random_and_owned():
    a, b = build_gateway_secret(body()), build_gateway_secret(body())
    assert a["metadata"]["name"] == "coder-gateway-api-key"
    assert a["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    key = base64.b64decode(a["data"][GATEWAY_API_KEY]).decode()
    assert len(key) >= 40 and key != base64.b64decode(b["data"][GATEWAY_API_KEY]).decode()
    assert key.strip() == key and "#" not in key and has_a_key(a["data"][GATEWAY_API_KEY])


def test_has_a_key_follows_the_keys_file_format():
    def enc(text):
        return base64.b64encode(text.encode()).decode()

    assert has_a_key(enc("k1\n"))
    assert has_a_key(enc("# team\n\nk2  # ci\n"))
    assert not has_a_key(enc("")) and not has_a_key(enc("# only a comment\n  \n"))
    assert not has_a_key(None) and not has_a_key("not base64!")


def test_no_gateway_children_unless_enabled():
    for gateway in (None, {"enabled": False}):
        spec = copy.deepcopy(BASE)
        spec.pop("gateway")
        if gateway is not None:
            spec["gateway"] = gateway
        assert not any(name.endswith("-gateway") for _, name in built(spec))
        parsed = parse_spec(spec)
        assert ("Deployment", "coder-gateway") in unwanted_children("coder", parsed)
        assert ("Service", "coder-gateway") in unwanted_children("coder", parsed)
        # the generated key is kept: enabling the gateway again keeps the clients' key
        assert ("Secret", "coder-gateway-api-key") not in unwanted_children("coder", parsed)


def test_wanted_children():
    wanted = wanted_children("coder", parse_spec(BASE))
    assert wanted[-3:] == [
        ("Service", "coder-gateway"),
        ("Deployment", "coder-gateway"),
        ("Secret", "coder-gateway-api-key"),
    ]
    spec = copy.deepcopy(BASE)
    spec["gateway"]["apiKeySecretRef"] = {"name": "team-keys", "key": "k"}
    wanted = wanted_children("coder", parse_spec(spec))
    assert ("Secret", "coder-gateway-api-key") not in wanted
    assert not any(
        name.startswith("coder-gateway") for _, name in unwanted_children("coder", parse_spec(spec))
    )


# -- hashes ---------------------------------------------------------------------------------------
def test_the_gateway_never_rolls_the_workers_and_scaling_the_workers_never_rolls_it():
    off = copy.deepcopy(BASE)
    off.pop("gateway")
    on = parse_spec(BASE)
    scaled = copy.deepcopy(BASE)
    scaled["gateway"]["replicas"] = 5
    assert config_hash(parse_spec(off), CONFIG, {}) == config_hash(on, CONFIG, {})
    assert config_hash(parse_spec(scaled), CONFIG, {}) == config_hash(on, CONFIG, {})
    key = ("coder-gateway-api-key", {GATEWAY_API_KEY: "a2V5MQ=="})
    h = gateway_config_hash(on, CONFIG, {}, key)
    more_workers = parse_spec({**BASE, "replicas": 4})
    assert gateway_config_hash(more_workers, CONFIG, {}, key) == h
    # what the gateway pods read beyond their template: the key, the workers' config
    assert gateway_config_hash(on, CONFIG, {}, (key[0], {GATEWAY_API_KEY: "a2V5Mg=="})) != h
    assert gateway_config_hash(parse_spec({**BASE, "graph": "pkg.mod:other"}), CONFIG, {}, key) != h
    redis = {("Secret", "coder-redis-auth"): {"password": "cDE="}}
    assert gateway_config_hash(on, CONFIG, redis, key) != h


# -- status ---------------------------------------------------------------------------------------
def test_status_shows_the_endpoint_the_key_and_ready_replicas():
    b = body()
    spec = parse_spec(b["spec"])
    dep = {"spec": {"replicas": 2}, "status": {"readyReplicas": 1}}
    plan = plan_status(
        StatusInputs.of(b, spec),
        deployment=None,
        statefulset=None,
        error=None,
        previous={},
        now="2026-01-01T00:00:00Z",
        gateway=dep,
    )
    assert plan.status["gateway"] == {
        "endpoint": "http://coder-gateway.agents.svc:80",
        "serviceType": "ClusterIP",
        "deployment": "coder-gateway",
        "replicas": 2,
        "readyReplicas": 1,
        "ready": "1/2",
        "apiKeySecretRef": {"name": "coder-gateway-api-key", "key": GATEWAY_API_KEY},
    }
    # disabled: the block goes away
    off = body({**BASE, "gateway": {"enabled": False}})
    plan2 = plan_status(
        StatusInputs.of(off, parse_spec(off["spec"])),
        deployment=None,
        statefulset=None,
        error=None,
        previous=plan.status,
        now="2026-01-01T00:00:00Z",
    )
    assert "gateway" not in plan2.status and plan2.patch["gateway"] is None
    # an invalid spec keeps showing where the gateway is
    bad = body({**BASE, "replicas": -1})
    assert StatusInputs.of(bad, None).gateway.enabled


def test_printer_column():
    col = next(c for c in PRINTER_COLUMNS if c["name"] == "Gateway")
    assert col["jsonPath"] == ".status.gateway.endpoint"


# -- the reconciler on the in-memory store -------------------------------------------------------
SPEC = {
    "graph": "pkg.mod:agent",
    "image": "img:1",
    "temporal": {"address": "temporal:7233"},
    "gateway": {"enabled": True},
}


@pytest.fixture
def world():
    store = MemoryStore()
    store.create(agent(SPEC))
    store.writes.clear()
    events: list[tuple[str, str, str]] = []
    rec = Reconciler(
        store,  # type: ignore[arg-type]
        OperatorConfig(),
        event=lambda body, t, reason, msg: events.append((t, reason, msg)),
        redis_probe=store.probe,
    )
    return store, rec, events


def _set_spec(store, spec):
    body = store.get("DeepAgent", "agents", "coder")
    body["spec"] = spec
    body["metadata"]["generation"] += 1
    store.objects[("DeepAgent", "agents", "coder")] = body
    return body


def _hash(store, name):
    dep = store.get("Deployment", "agents", name)
    return dep["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]


def test_enable_creates_the_key_once_then_nothing_is_written(world):
    store, rec, events = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    writes = sorted((w[0], w[1], w[3]) for w in store.child_writes())
    assert writes == [
        ("apply", "Deployment", "coder-gateway"),
        ("apply", "Deployment", "coder-worker"),
        ("apply", "Service", "coder-gateway"),
        ("create", "Secret", "coder-gateway-api-key"),
    ]
    assert any("generated gateway API key" in e[2] for e in events)
    key = store.get("Secret", "agents", "coder-gateway-api-key")["data"][GATEWAY_API_KEY]
    status = store.get("DeepAgent", "agents", "coder")["status"]
    assert status["gateway"]["endpoint"] == "http://coder-gateway.agents.svc:80"
    assert status["gateway"]["ready"] == "0/1"
    assert status["workers"]["deployment"] == "coder-worker"  # not the gateway's
    store.writes.clear()
    rec.reconcile(store.get("DeepAgent", "agents", "coder"), thorough=True)
    Reconciler(store, OperatorConfig(), event=lambda *a: None).reconcile(
        store.get("DeepAgent", "agents", "coder"), thorough=True
    )
    assert store.writes == []
    assert store.get("Secret", "agents", "coder-gateway-api-key")["data"][GATEWAY_API_KEY] == key


def test_gateway_readiness_shows_in_status_not_in_phase(world):
    store, rec, _ = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    worker = store.objects[("Deployment", "agents", "coder-worker")]
    worker["status"] = {"observedGeneration": 1, "readyReplicas": 1, "availableReplicas": 1,
                        "updatedReplicas": 1}  # fmt: skip
    assert rec.on_child_event("Deployment", "MODIFIED", worker) == "status"
    status = store.get("DeepAgent", "agents", "coder")["status"]
    assert status["phase"] == "Ready" and status["ready"] == "1/1"
    assert status["gateway"]["ready"] == "0/1"
    gateway = store.objects[("Deployment", "agents", "coder-gateway")]
    gateway["status"] = {"observedGeneration": 1, "readyReplicas": 1}
    assert rec.on_child_event("Deployment", "MODIFIED", gateway) == "status"
    status = store.get("DeepAgent", "agents", "coder")["status"]
    assert status["gateway"]["ready"] == "1/1" and status["ready"] == "1/1"


def test_a_new_key_rolls_the_gateway_not_the_workers(world):
    store, rec, events = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    gw, wk = _hash(store, "coder-gateway"), _hash(store, "coder-worker")
    store.delete("Secret", "agents", "coder-gateway-api-key")  # rotation: delete the Secret
    store.writes.clear()
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    writes = sorted((w[0], w[1], w[3]) for w in store.child_writes())
    assert writes == [
        ("apply", "Deployment", "coder-gateway"),
        ("create", "Secret", "coder-gateway-api-key"),
    ]
    assert _hash(store, "coder-gateway") != gw and _hash(store, "coder-worker") == wk
    assert any(e[1] == "RollingGateway" and "coder-gateway" in e[2] for e in events)


def test_disable_deletes_deployment_and_service_and_keeps_the_key(world):
    store, rec, events = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    wk = _hash(store, "coder-worker")
    body = _set_spec(store, {**SPEC, "gateway": {"enabled": False}})
    store.writes.clear()
    rec.reconcile(body)
    assert sorted((w[0], w[1], w[3]) for w in store.child_writes()) == [
        ("delete", "Deployment", "coder-gateway"),
        ("delete", "Service", "coder-gateway"),
    ]
    assert _hash(store, "coder-worker") == wk  # the workers did not roll
    assert store.get("Secret", "agents", "coder-gateway-api-key") is not None
    assert "gateway" not in store.get("DeepAgent", "agents", "coder")["status"]
    assert ("Normal", "Deleted") in {(e[0], e[1]) for e in events}


def test_users_key_secret_no_generated_one(world):
    store, rec, _ = world
    ref = {"name": "team-keys", "key": "keys"}
    body = _set_spec(store, {**SPEC, "gateway": {"enabled": True, "apiKeySecretRef": ref}})
    with pytest.raises(SpecError) as exc:
        rec.reconcile(body)
    assert (
        exc.value.reason == "SecretNotFound" and exc.value.field == "spec.gateway.apiKeySecretRef"
    )
    assert store.child_writes() == []
    secret = {
        "kind": "Secret",
        "metadata": {"name": "team-keys", "namespace": "agents"},
        "data": {"keys": base64.b64encode(b"# nobody\n").decode()},
    }
    store.create(secret)
    with pytest.raises(SpecError) as exc:
        rec.reconcile(body)
    assert exc.value.reason == "SecretKeyNotFound"
    store.objects[("Secret", "agents", "team-keys")]["data"]["keys"] = base64.b64encode(
        b"k1\n"
    ).decode()
    store.writes.clear()
    rec.reconcile(body)
    assert store.get("Secret", "agents", "coder-gateway-api-key") is None
    dep = store.get("Deployment", "agents", "coder-gateway")
    assert pod(dep)["volumes"][1]["secret"]["secretName"] == "team-keys"
    status = store.get("DeepAgent", "agents", "coder")["status"]
    assert status["gateway"]["apiKeySecretRef"] == ref
    # a changed key in the user's Secret rolls the gateway
    gw = _hash(store, "coder-gateway")
    store.objects[("Secret", "agents", "team-keys")]["data"]["keys"] = base64.b64encode(
        b"k2\n"
    ).decode()
    rec.reconcile(body)
    assert _hash(store, "coder-gateway") != gw


def test_a_foreign_key_secret_is_a_conflict(world):
    store, rec, _ = world
    store.create(
        {
            "kind": "Secret",
            "metadata": {"name": "coder-gateway-api-key", "namespace": "agents"},
            "data": {GATEWAY_API_KEY: base64.b64encode(b"theirs").decode()},
        }
    )
    store.writes.clear()
    with pytest.raises(SpecError) as exc:
        rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    assert exc.value.reason == "ChildNotOwned" and "Secret coder-gateway-api-key" in str(exc.value)
    assert store.child_writes() == []


def test_autoscaled_workers_leave_the_gateway_replicas_alone(world):
    store, rec, _ = world
    spec = {
        **SPEC,
        "autoscaling": {"minReplicas": 3, "maxReplicas": 5},
        "resources": {"requests": {"cpu": "1"}},
        "gateway": {"enabled": True, "replicas": 2},
    }
    rec.reconcile(_set_spec(store, spec))
    assert store.get("Deployment", "agents", "coder-worker")["spec"]["replicas"] == 3
    assert store.get("Deployment", "agents", "coder-gateway")["spec"]["replicas"] == 2
    handoffs = [r for r in store.applied_replicas if r[0] != "deepagent-operator"]
    assert handoffs == [("deepagent-operator-replicas-handoff", "Deployment", 3)]
