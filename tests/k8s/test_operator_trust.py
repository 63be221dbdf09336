"""Operator trust on a real API server (kube-apiserver + etcd + controller-manager + kwok).

1. Objects it does not control are never touched: a foreign object of each child kind is
   byte-for-byte unchanged, the DeepAgent says why (ChildNotOwned, a Warning event), and the
   object survives deleting the DeepAgent.
2. A child write the API server refuses is SpecValid=False with the server's own message and
   is not retried in a hot loop (the refused writes are counted).
3. Managed Redis: the password is in a config file (not in argv), RedisReady means AUTH + PING
   with the agent's password succeed, and rotating the password (deleting the Secret) rolls
   Redis and the workers until AUTH succeeds again.
5. Switching from ``replicas: 5`` to autoscaling never scales the Deployment down.
6. After DeepAgents come and go, the operator holds no per-agent state.

Redis "pods" are real redis-server processes started from the StatefulSet's pod template
(:class:`tests.harness.redis_pods.RedisPods`); the operator reaches them by Service name.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import pytest
import redis as redis_py
from kubernetes import client, watch

from deepagent_operator.kube import Kube
from tests.harness.operator_process import OperatorProcess
from tests.harness.redis_pods import RedisPods
from tests.harness.wait import wait_for

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "deepagent.yaml"
RESYNC = 2.0


@pytest.fixture(scope="module")
def kube(k8s_cluster) -> Kube:
    k8s_cluster.install_crd(CRD)
    return Kube(k8s_cluster.api_client)


@pytest.fixture(scope="module")
def ns(k8s_cluster, kube):
    name = k8s_cluster.create_namespace("trust")
    yield name
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def redis_pods(kube, ns, tmp_path_factory):
    work = tmp_path_factory.mktemp("redis-pods")
    with RedisPods(kube, ns, work / "hosts.json", work) as pods:
        yield pods


@pytest.fixture(scope="module")
def operator(k8s_cluster, ns, redis_pods, request, tmp_path_factory):
    op = OperatorProcess(
        k8s_cluster.kubeconfig,
        [ns],
        default_image="example/runtime:1",
        default_temporal_address="temporal:7233",
        resync_seconds=RESYNC,
        log_dir=str(tmp_path_factory.mktemp("operator-logs")),
        hosts_file=redis_pods.hosts_file,
    )
    op.start()
    yield op
    op.stop()
    if request.session.testsfailed:
        print(f"--- operator log ({op.log_path}) ---\n{op.log_tail(200)}")


def apply(k8s_cluster, ns: str, name: str, spec: dict) -> None:
    agent = {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"graph": "pkg.mod:agent", **spec},
    }
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(agent))


def patch(k8s_cluster, ns: str, name: str, body: dict) -> None:
    k8s_cluster.kubectl("patch", "da", name, "-n", ns, "--type=merge", "-p", json.dumps(body))


def status(kube, ns, name) -> dict:
    return (kube.get("DeepAgent", ns, name) or {}).get("status") or {}


def cond(kube, ns, name, type_) -> dict:
    return next(
        (c for c in status(kube, ns, name).get("conditions") or [] if c["type"] == type_), {}
    )


def wait_cond(kube, ns, name, type_, state, reason=None, timeout=60.0, logs=lambda: ""):
    def ok():
        c = cond(kube, ns, name, type_)
        return c.get("status") == state and (reason is None or c.get("reason") == reason) and c

    return wait_for(f"{name} {type_}={state} {reason or ''}", ok, timeout, logs=logs)


def warning_events(k8s_cluster, ns, name) -> list[dict]:
    out = k8s_cluster.kubectl(
        "get", "events", "-n", ns, "-o", "json",
        "--field-selector", f"involvedObject.name={name},type=Warning",
    ).stdout  # fmt: skip
    return json.loads(out)["items"]


# -- 1. objects the DeepAgent does not control ------------------------------------------------
MANAGED_AUTOSCALED = {
    "streaming": {"redis": {"mode": "Managed"}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
    "resources": {"requests": {"cpu": "100m"}},
}
SELECT = {"matchLabels": {"app": "theirs"}}
POD = {
    "metadata": {"labels": {"app": "theirs"}},
    "spec": {"containers": [{"name": "c", "image": "example/theirs:1"}]},
}
#: (agent, kind, the foreign object's name, its body)
FOREIGN = [
    ("own-dep", "Deployment", "own-dep-worker",
     {"apiVersion": "apps/v1", "spec": {"replicas": 1, "selector": SELECT, "template": POD}}),
    ("own-sts", "StatefulSet", "own-sts-redis",
     {"apiVersion": "apps/v1",
      "spec": {"replicas": 1, "serviceName": "theirs", "selector": SELECT, "template": POD}}),
    ("own-svc", "Service", "own-svc-redis",
     {"apiVersion": "v1", "spec": {"selector": {"app": "shared-redis"}, "ports": [{"port": 6379}]}}),
    ("own-sec", "Secret", "own-sec-redis-auth",
     {"apiVersion": "v1", "data": {"password": base64.b64encode(b"theirs").decode()}}),
    ("own-np", "NetworkPolicy", "own-np-redis",
     {"apiVersion": "networking.k8s.io/v1", "spec": {"podSelector": SELECT}}),
    ("own-hpa", "HorizontalPodAutoscaler", "own-hpa-worker",
     {"apiVersion": "autoscaling/v2",
      "spec": {"maxReplicas": 2,
               "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}}}),
]  # fmt: skip


def fingerprint(obj: dict) -> dict:
    """Everything but status and what only status writes change."""
    meta = {
        k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")
    }
    fields = [
        (m["manager"], m["operation"], json.dumps(m.get("fieldsV1"), sort_keys=True))
        for m in obj["metadata"].get("managedFields") or []
        if m.get("subresource") != "status"
    ]
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    return {"metadata": meta, "fields": sorted(fields), **rest}


@pytest.fixture(scope="module")
def foreign(k8s_cluster, kube, ns, operator):
    """Each foreign object, created first, then its DeepAgent; -> {agent: snapshot}."""
    for _agent, kind, name, body in FOREIGN:  # a team's objects, made with kubectl
        theirs = {"kind": kind, "metadata": {"name": name, "namespace": ns}, **body}
        k8s_cluster.kubectl("create", "-f", "-", input=json.dumps(theirs))
    # Let controllers finish their own metadata writes (the Deployment's revision annotation).
    wait_for(
        "the foreign Deployment settled",
        lambda: (
            "deployment.kubernetes.io/revision"
            in (kube.get("Deployment", ns, "own-dep-worker")["metadata"].get("annotations") or {})
        ),
    )
    snapshots = {agent: fingerprint(kube.get(kind, ns, name)) for agent, kind, name, _ in FOREIGN}
    for agent, *_ in FOREIGN:
        apply(k8s_cluster, ns, agent, MANAGED_AUTOSCALED)
    for agent, *_ in FOREIGN:
        wait_cond(kube, ns, agent, "SpecValid", "False", "ChildNotOwned", logs=operator.log_tail)
    time.sleep(RESYNC * 1.5)  # resyncs and kopf's retries have run meanwhile
    return snapshots


@pytest.mark.parametrize("agent,kind,name,body", FOREIGN, ids=[f[1] for f in FOREIGN])
def test_foreign_child_is_untouched_and_reported(
    k8s_cluster, kube, ns, operator, foreign, agent, kind, name, body
):
    c = wait_cond(kube, ns, agent, "SpecValid", "False", "ChildNotOwned", logs=operator.log_tail)
    assert f"{kind} {name} already exists and is not controlled by this DeepAgent" in c["message"]
    assert "rename the DeepAgent" in c["message"] and f"delete {kind} {name}" in c["message"]
    st = status(kube, ns, agent)
    assert st["phase"] == "Failed" and cond(kube, ns, agent, "Ready")["reason"] == "ChildNotOwned"
    wait_for(
        "a Warning event naming the object",
        lambda: any(
            e["reason"] == "ChildNotOwned" and name in e["message"]
            for e in warning_events(k8s_cluster, ns, agent)
        ),
    )
    live = kube.get(kind, ns, name)
    assert fingerprint(live) == foreign[agent]
    assert not live["metadata"].get("ownerReferences")
    assert "deepagent-operator" not in json.dumps(live["metadata"].get("managedFields"))
    # The operator wrote no child of this agent at all while the name is taken.
    others = [
        (k, n)
        for k, n in [
            ("Deployment", f"{agent}-worker"),
            ("StatefulSet", f"{agent}-redis"),
            ("Service", f"{agent}-redis"),
            ("Secret", f"{agent}-redis-auth"),
            ("NetworkPolicy", f"{agent}-redis"),
            ("HorizontalPodAutoscaler", f"{agent}-worker"),
        ]
        if (k, n) != (kind, name)
    ]
    assert [kn for kn in others if kube.get(*kn[:1], ns, kn[1])] == []


def test_foreign_children_survive_deleting_the_deepagents(k8s_cluster, kube, ns, foreign):
    for agent, *_ in FOREIGN:
        wait_cond(kube, ns, agent, "SpecValid", "False", "ChildNotOwned")
    uids = {agent: kube.get(kind, ns, name)["metadata"]["uid"] for agent, kind, name, _ in FOREIGN}
    for agent, *_ in FOREIGN:
        k8s_cluster.kubectl("delete", "da", agent, "-n", ns, "--wait=true", "--timeout=60s")
    time.sleep(3)  # the garbage collector has had its chance
    for agent, kind, name, _ in FOREIGN:
        live = kube.get(kind, ns, name)
        assert live is not None, f"{kind} {name} was deleted with DeepAgent {agent}"
        assert live["metadata"]["uid"] == uids[agent]
        assert fingerprint(live) == foreign[agent]


def test_the_agent_recovers_once_the_name_is_free(k8s_cluster, kube, ns, operator):
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "freed-redis", "namespace": ns},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 6379}]},
    }
    k8s_cluster.kubectl("create", "-f", "-", input=json.dumps(theirs))
    apply(k8s_cluster, ns, "freed", {"streaming": {"redis": {"mode": "Managed"}}})
    wait_cond(kube, ns, "freed", "SpecValid", "False", "ChildNotOwned")
    kube.delete("Service", ns, "freed-redis")
    wait_for(
        "Ready", lambda: status(kube, ns, "freed").get("phase") == "Ready", logs=operator.log_tail
    )
    svc = kube.get("Service", ns, "freed-redis")
    assert svc["metadata"]["ownerReferences"][0]["name"] == "freed"
    k8s_cluster.kubectl("delete", "da", "freed", "-n", ns)


# -- 2. refused child writes -------------------------------------------------------------------
def refused(op: OperatorProcess, resource: str) -> float:
    return sum(
        v
        for k, v in op.metrics().items()
        if k.startswith("api_requests_by_total")
        and 'method="PATCH"' in k
        and f'resource="{resource}"' in k
        and 'code="422"' in k
    )


def test_refused_write_is_a_condition_with_the_servers_message_and_backoff(
    k8s_cluster, kube, ns, operator
):
    # Valid for the CRD (tolerations are free-form), refused by the Deployment's validation.
    before = refused(operator, "deployments")
    apply(k8s_cluster, ns, "badtol", {"tolerations": [{"key": "k", "operator": "Sometimes"}]})
    c = wait_cond(kube, ns, "badtol", "SpecValid", "False", "ChildRejected", logs=operator.log_tail)
    assert 'Deployment.apps "badtol-worker" is invalid' in c["message"]
    assert re.search(r'tolerations\[0\]\.operator: Unsupported value: "Sometimes"', c["message"])
    st = status(kube, ns, "badtol")
    assert st["phase"] == "Failed" and st["ready"] == "0/1"  # a READY column, a phase
    out = k8s_cluster.kubectl("get", "da", "badtol", "-n", ns).stdout.splitlines()[1].split()
    assert out[1:3] == ["Failed", "0/1"]
    wait_for(
        "a Warning event with the server's message",
        lambda: any(
            e["reason"] == "ChildRejected" and "Unsupported value" in e["message"]
            for e in warning_events(k8s_cluster, ns, "badtol")
        ),
    )
    # Back-off, whatever triggers the reconcile (resync every 2 s, kopf's retries): the
    # same manifest is sent at 0, 5, 15, 35 s ... -> at most 2 tries in the first 9 s
    # (without back-off the resync alone would make 5).
    start = refused(operator, "deployments") - before
    time.sleep(8)
    tries = refused(operator, "deployments") - before
    assert 1 <= start and tries <= 2, (start, tries)
    # A fixed spec is sent at once.
    patch(
        k8s_cluster, ns, "badtol", {"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}
    )
    wait_for("Ready", lambda: status(kube, ns, "badtol").get("phase") == "Ready")
    k8s_cluster.kubectl("delete", "da", "badtol", "-n", ns)


def test_refused_statefulset_write_says_what_the_server_said(k8s_cluster, kube, ns, operator):
    apply(k8s_cluster, ns, "badsts", {"streaming": {"redis": {"mode": "Managed"}}})
    wait_for("Ready", lambda: status(kube, ns, "badsts").get("phase") == "Ready")
    patch(k8s_cluster, ns, "badsts", {"spec": {"tolerations": [{"key": "k", "operator": "No"}]}})
    c = wait_cond(kube, ns, "badsts", "SpecValid", "False", logs=operator.log_tail)
    # Not an "immutable field" story: the server's own words about the tolerations.
    assert c["reason"] == "ChildRejected", c
    assert 'StatefulSet.apps "badsts-redis" is invalid' in c["message"]
    assert 'Unsupported value: "No"' in c["message"]
    k8s_cluster.kubectl("delete", "da", "badsts", "-n", ns)


def test_wrongly_shaped_free_form_field_is_a_condition(k8s_cluster, kube, ns, operator):
    # affinity is free-form in the CRD; server-side apply refuses its shape (with a 500).
    apply(k8s_cluster, ns, "badaff", {"affinity": {"nodeAffinity": "oops"}})
    c = wait_cond(kube, ns, "badaff", "SpecValid", "False", "ChildRejected", logs=operator.log_tail)
    assert "nodeAffinity: expected map" in c["message"]
    k8s_cluster.kubectl("delete", "da", "badaff", "-n", ns)


# -- 3. Managed Redis authentication -----------------------------------------------------------
def password_of(kube, ns, name) -> str:
    return base64.b64decode(
        kube.get("Secret", ns, f"{name}-redis-auth")["data"]["password"]
    ).decode()


def annotations(kube, kind, ns, name) -> dict:
    return kube.get(kind, ns, name)["spec"]["template"]["metadata"]["annotations"]


def test_redis_password_is_a_file_and_rotation_rolls_redis(
    k8s_cluster, kube, ns, operator, redis_pods
):
    apply(k8s_cluster, ns, "rot", {"streaming": {"redis": {"mode": "Managed"}}})
    wait_for(
        "Ready", lambda: status(kube, ns, "rot").get("phase") == "Ready", logs=operator.log_tail
    )
    assert cond(kube, ns, "rot", "RedisReady")["message"].endswith("answers AUTH and PING")
    old = password_of(kube, ns, "rot")
    # The password is in no argv and no environment of the Redis pod, and not in the real
    # process's command line.
    (container,) = kube.get("StatefulSet", ns, "rot-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    assert old not in json.dumps(container) and "env" not in container
    assert container["command"] == ["redis-server", "/etc/redis/redis.conf"]
    cmdline = Path(f"/proc/{redis_pods.pid('rot-redis')}/cmdline").read_bytes().decode()
    assert old not in cmdline and "requirepass" not in cmdline
    # It is in the Secret's redis.conf, and it works.
    conf = kube.get("Secret", ns, "rot-redis-auth")["data"]["redis.conf"]
    assert base64.b64decode(conf).decode() == f'requirepass "{old}"\n'
    redis_hash = annotations(kube, "StatefulSet", ns, "rot-redis")["deepagent.dev/redis-auth-hash"]
    worker_hash = annotations(kube, "Deployment", ns, "rot-worker")["deepagent.dev/config-hash"]

    # Rotate: delete the Secret. Redis does not roll yet (paused): TCP still works, AUTH fails.
    redis_pods.paused = True
    k8s_cluster.kubectl("delete", "secret", "rot-redis-auth", "-n", ns)
    new = wait_for(
        "a new password",
        lambda: kube.get("Secret", ns, "rot-redis-auth") and password_of(kube, ns, "rot"),
        timeout=RESYNC * 10,
    )
    assert new != old
    wait_for(
        "Redis and workers roll with it",
        lambda: (
            annotations(kube, "StatefulSet", ns, "rot-redis")["deepagent.dev/redis-auth-hash"]
            != redis_hash
            and annotations(kube, "Deployment", ns, "rot-worker")["deepagent.dev/config-hash"]
            != worker_hash
        ),
        timeout=RESYNC * 10,
    )
    c = wait_cond(kube, ns, "rot", "RedisReady", "False", "RedisAuthFailed", logs=operator.log_tail)
    assert "refused the password" in c["message"]
    assert status(kube, ns, "rot")["phase"] == "Degraded"
    port = int(
        json.loads(redis_pods.hosts_file.read_text())[f"rot-redis.{ns}.svc:6379"].split(":")[1]
    )
    assert redis_py.Redis(port=port, password=old).ping()  # the old Redis is up: TCP is not enough

    # The pod rolls (as the StatefulSet controller would): AUTH with the new password works.
    redis_pods.paused = False
    wait_cond(kube, ns, "rot", "RedisReady", "True", timeout=RESYNC * 10, logs=operator.log_tail)
    wait_for("Ready again", lambda: status(kube, ns, "rot").get("phase") == "Ready")
    assert redis_pods.argv("rot-redis") != [] and redis_pods.starts["rot-redis"] == 2
    port = int(
        json.loads(redis_pods.hosts_file.read_text())[f"rot-redis.{ns}.svc:6379"].split(":")[1]
    )
    assert redis_py.Redis(port=port, password=new).ping()
    with pytest.raises(redis_py.AuthenticationError):
        redis_py.Redis(port=port, password=old).ping()
    k8s_cluster.kubectl("delete", "da", "rot", "-n", ns)


# -- 5. replicas -> autoscaling ----------------------------------------------------------------
def test_switch_to_autoscaling_never_scales_down(k8s_cluster, kube, ns, operator):
    apply(k8s_cluster, ns, "scale", {"replicas": 5, "resources": {"requests": {"cpu": "100m"}}})
    wait_for("5/5", lambda: status(kube, ns, "scale").get("ready") == "5/5", logs=operator.log_tail)
    seen: list[int] = []
    stop = threading.Event()
    rv = kube.get("Deployment", ns, "scale-worker")["metadata"]["resourceVersion"]
    apps = client.AppsV1Api(k8s_cluster.api_client)

    def record() -> None:
        w = watch.Watch()
        for event in w.stream(
            apps.list_namespaced_deployment,
            ns,
            field_selector="metadata.name=scale-worker",
            resource_version=rv,
            timeout_seconds=60,
        ):
            seen.append(event["object"].spec.replicas)
            if stop.is_set():
                w.stop()

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    patch(
        k8s_cluster, ns, "scale",
        {"spec": {"replicas": None, "autoscaling": {"minReplicas": 5, "maxReplicas": 10}}},
    )  # fmt: skip
    wait_for("HPA", lambda: kube.get("HorizontalPodAutoscaler", ns, "scale-worker"))

    def handed_over():
        dep = kube.get("Deployment", ns, "scale-worker")
        owners = {
            m["manager"]
            for m in dep["metadata"].get("managedFields") or []
            if "f:replicas" in json.dumps(m.get("fieldsV1", {}))
        }
        return "deepagent-operator" not in owners and owners

    owners = wait_for("the operator no longer owns replicas", handed_over, logs=operator.log_tail)
    assert "deepagent-operator-replicas-handoff" in owners
    time.sleep(RESYNC * 2)  # more reconciles: still no scale-down
    stop.set()
    k8s_cluster.kubectl("annotate", "deployment", "scale-worker", "-n", ns, "test/wake=watch")
    recorder.join(10)
    assert seen and min(seen) >= 5, seen
    assert kube.get("Deployment", ns, "scale-worker")["spec"]["replicas"] == 5
    wait_for("Ready", lambda: status(kube, ns, "scale").get("phase") == "Ready")
    k8s_cluster.kubectl("delete", "da", "scale", "-n", ns)


def test_new_autoscaled_deployment_starts_at_min_replicas(k8s_cluster, kube, ns, operator):
    spec = {
        "autoscaling": {"minReplicas": 3, "maxReplicas": 6},
        "resources": {"requests": {"cpu": "1"}},
    }
    apply(k8s_cluster, ns, "hpa3", spec)
    wait_for("3/3", lambda: status(kube, ns, "hpa3").get("ready") == "3/3", logs=operator.log_tail)
    k8s_cluster.kubectl("delete", "da", "hpa3", "-n", ns)


# -- 6. bounded state --------------------------------------------------------------------------
def test_no_per_agent_state_is_left_after_agents_come_and_go(k8s_cluster, kube, tmp_path):
    """Its own operator and namespace, no periodic resync: deletion and late child events
    alone must leave nothing behind."""
    ns = k8s_cluster.create_namespace("bounded")
    count = 30
    try:
        with OperatorProcess(
            k8s_cluster.kubeconfig,
            [ns],
            default_image="example/runtime:1",
            default_temporal_address="temporal:7233",
            resync_seconds=3600,
            log_dir=str(tmp_path),
        ) as op:
            names = [f"b{i}" for i in range(count)]
            for i, name in enumerate(names):
                spec = {"streaming": {"redis": {"mode": "Managed"}}} if i % 3 == 0 else {}
                kube.create(
                    {
                        "apiVersion": "deepagent.dev/v1alpha1",
                        "kind": "DeepAgent",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"graph": "pkg.mod:agent", **spec},
                    }
                )
            wait_for(
                "all reconciled",
                lambda: all(status(kube, ns, n).get("phase") for n in names),
                logs=op.log_tail,
            )
            assert op.metrics()["tracked_agents"] == count
            for name in names:
                kube.delete("DeepAgent", ns, name)
            wait_for(
                "children garbage-collected",
                lambda: (
                    not list(kube.list("Deployment", ns)) and not list(kube.list("StatefulSet", ns))
                ),
                timeout=90,
            )
            wait_for(
                "no per-agent state",
                lambda: (m := op.metrics())["tracked_agents"] == 0 and m["agent_locks"] == 0,
                timeout=30,
                logs=op.log_tail,
            )
    finally:
        k8s_cluster.delete_namespace(ns)
