"""Operator trust on the in-memory store (tests/k8s checks the same on a real API server):
foreign objects are never touched, refused writes become conditions with back-off, the Redis
password Secret and readiness check, the replicas hand-over to an HPA, bounded state."""

from __future__ import annotations

import base64
import copy
import threading
import time

import pytest

from deepagent_operator import MANAGER
from deepagent_operator.config import OperatorConfig
from deepagent_operator.kube import ApiError
from deepagent_operator.model import SpecError
from deepagent_operator.reconcile import HANDOFF_MANAGER, Reconciler
from deepagent_operator.state import Cached
from deepagent_operator.status import ProbeResult
from tests.unit.test_operator_reconciler import SPEC, MemoryStore, agent

NS = "agents"
AUTOSCALED = dict(
    SPEC,
    autoscaling={"minReplicas": 2, "maxReplicas": 4},
    resources={"requests": {"cpu": "250m"}},
)


def make(spec=SPEC, name="coder", store=None, config=None):
    store = store or MemoryStore()
    store.create(
        {
            "kind": "Secret",
            "metadata": {"name": "keys", "namespace": NS},
            "data": {"K": base64.b64encode(b"v1").decode()},
        }
    )
    store.create(agent(copy.deepcopy(spec), name=name))
    events: list[tuple[str, str, str]] = []
    rec = Reconciler(
        store,  # type: ignore[arg-type]
        config or OperatorConfig(),
        event=lambda body, t, reason, msg: events.append((t, reason, msg)),
        redis_probe=store.probe,
    )
    store.writes.clear()
    return store, rec, events


def body(store, name="coder"):
    return store.get("DeepAgent", NS, name)


def condition(store, type_, name="coder"):
    status = body(store, name)["status"]
    return next(c for c in status["conditions"] if c["type"] == type_)


# -- 1. never touch what the agent does not control -------------------------------------------
FOREIGN = [
    ("Deployment", "coder-worker", {"spec": {"replicas": 3, "template": {"x": 1}}}),
    ("StatefulSet", "coder-redis", {"spec": {"serviceName": "theirs"}}),
    ("Service", "coder-redis", {"spec": {"selector": {"app": "shared-redis"}}}),
    ("Secret", "coder-redis-auth", {"data": {"password": base64.b64encode(b"x").decode()}}),
    ("NetworkPolicy", "coder-redis", {"spec": {"podSelector": {}}}),
    ("HorizontalPodAutoscaler", "coder-worker", {"spec": {"maxReplicas": 9}}),
]


@pytest.mark.parametrize("kind,name,content", FOREIGN, ids=[f[0] for f in FOREIGN])
def test_foreign_child_is_never_written_and_becomes_a_condition(kind, name, content):
    store, rec, events = make(AUTOSCALED)
    theirs = {"kind": kind, "metadata": {"name": name, "namespace": NS}, **content}
    store.create(copy.deepcopy(theirs))
    before = store.get(kind, NS, name)
    store.writes.clear()
    with pytest.raises(SpecError) as exc:
        rec.reconcile(body(store))
    assert exc.value.reason == "ChildNotOwned"
    assert store.child_writes() == []  # nothing at all: not the foreign object, no other child
    assert store.get(kind, NS, name) == before
    cond = condition(store, "SpecValid")
    assert cond["status"] == "False" and cond["reason"] == "ChildNotOwned"
    assert (
        f"{kind} {name} already exists and is not controlled by this DeepAgent" in (cond["message"])
    )
    assert f"delete {kind} {name}" in cond["message"] and "rename the DeepAgent" in cond["message"]
    assert ("Warning", "ChildNotOwned") in {(t, r) for t, r, _ in events}
    assert body(store)["status"]["phase"] == "Failed"
    # Once the name is free the agent gets its children.
    store.delete(kind, NS, name)
    rec.reconcile(body(store))
    assert condition(store, "SpecValid")["status"] == "True"
    assert store.get(kind, NS, name)["metadata"]["ownerReferences"][0]["uid"] == "uid-coder"


# -- 2. a refused child write is a condition, with back-off -----------------------------------
def test_refused_write_reports_the_servers_message_and_backs_off(monkeypatch):
    store, rec, events = make()
    message = (
        'Deployment.apps "coder-worker" is invalid: spec.template.spec.tolerations[0].operator: '
        'Unsupported value: "Sometimes"'
    )
    store.reject[("Deployment", "coder-worker")] = message
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    with pytest.raises(SpecError) as exc:
        rec.reconcile(body(store))
    assert exc.value.reason == "ChildRejected"
    cond = condition(store, "SpecValid")
    assert cond["status"] == "False" and cond["reason"] == "ChildRejected"
    assert message in cond["message"]
    assert ("Warning", "ChildRejected", str(exc.value)) in events

    def refused():
        return sum(w[0] == "rejected" for w in store.writes)

    assert refused() == 1
    for _ in range(20):  # resyncs and retries inside the back-off: not sent again
        with pytest.raises(SpecError):
            rec.reconcile(body(store), thorough=True)
    assert refused() == 1
    clock[0] += 5.1  # 5 s, then 10 s, 20 s, ...
    with pytest.raises(SpecError):
        rec.reconcile(body(store))
    assert refused() == 2
    clock[0] += 9
    with pytest.raises(SpecError):
        rec.reconcile(body(store))
    assert refused() == 2
    clock[0] += 1.1
    with pytest.raises(SpecError):
        rec.reconcile(body(store))
    assert refused() == 3
    # A changed spec is sent at once, and a successful write clears the error.
    del store.reject[("Deployment", "coder-worker")]
    fixed = body(store)
    fixed["spec"]["replicas"] = 2
    store.objects[("DeepAgent", NS, "coder")] = fixed
    rec.reconcile(fixed)
    assert condition(store, "SpecValid")["status"] == "True"
    assert rec.agents.peek((NS, "coder")).rejections == {}


def test_typed_patch_errors_are_refusals_too():
    store, rec, _ = make()
    message = "failed to create typed patch object (agents/coder-worker; apps/v1, Kind=Deployment)"

    def refuse(obj, manager=MANAGER):
        raise ApiError(
            500,
            {"message": message + ": .spec...affinity.nodeAffinity: expected map"},
            "PATCH",
            "x",
        )

    store.apply = refuse  # type: ignore[method-assign]
    with pytest.raises(SpecError) as exc:
        rec.reconcile(body(store))
    assert exc.value.reason == "ChildRejected" and "expected map" in str(exc.value)


# -- 3. the Redis password: a config file in the Secret, and AUTH + PING ----------------------
def test_old_secret_gets_its_redis_conf_and_redis_rolls_with_the_password():
    store, rec, events = make()
    password = base64.b64encode(b"old-operator-password").decode()
    rec.reconcile(body(store))
    secret = store.objects[("Secret", NS, "coder-redis-auth")]
    assert set(secret["data"]) == {"password", "redis.conf"}

    def auth_hash():
        sts = store.get("StatefulSet", NS, "coder-redis")
        return sts["spec"]["template"]["metadata"]["annotations"]["deepagent.dev/redis-auth-hash"]

    first = auth_hash()
    secret["data"] = {"password": password}  # what an older operator created
    store.writes.clear()
    rec.reconcile(body(store))
    conf = base64.b64decode(secret["data"]["redis.conf"]).decode()
    assert conf == 'requirepass "old-operator-password"\n'
    assert ("patch", "Secret", NS, "coder-redis-auth") in store.writes
    assert auth_hash() != first  # Redis rolls ...
    assert ("apply", "Deployment", NS, "coder-worker") in store.writes  # ... and the workers
    store.writes.clear()
    rec.reconcile(body(store))
    assert store.child_writes() == []
    # A Secret without the password key is a condition (the password is never invented).
    secret["data"] = {}
    with pytest.raises(SpecError) as exc:
        rec.reconcile(body(store))
    assert exc.value.reason == "RedisSecretInvalid" and "delete Secret coder-redis-auth" in str(
        exc.value
    )


def test_redis_ready_needs_auth_and_ping():
    store, rec, _ = make()
    rec.reconcile(body(store))
    sts = store.objects[("StatefulSet", NS, "coder-redis")]
    sts["status"] = {"readyReplicas": 1}
    dep = store.objects[("Deployment", NS, "coder-worker")]
    dep["status"] = {
        "observedGeneration": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1
    }  # fmt: skip
    rec.on_child_event("StatefulSet", "MODIFIED", sts)  # the status follows the watch events
    rec.on_child_event("Deployment", "MODIFIED", dep)
    assert condition(store, "RedisReady")["status"] == "True"
    assert body(store)["status"]["phase"] == "Ready"
    password = base64.b64decode(store.get("Secret", NS, "coder-redis-auth")["data"]["password"])
    assert store.probes[-1] == ("coder-redis.agents.svc", 6379, password.decode())
    store.probe_result = ProbeResult(False, "RedisAuthFailed", "Redis refused the password")
    rec.reconcile(body(store))
    cond = condition(store, "RedisReady")
    assert (cond["status"], cond["reason"]) == ("False", "RedisAuthFailed")
    assert body(store)["status"]["redis"]["ready"] is False
    assert condition(store, "Ready")["reason"] == "RedisAuthFailed"
    assert body(store)["status"]["phase"] == "Degraded"


# -- 5. switching from replicas to autoscaling never scales down ------------------------------
def test_switch_to_autoscaling_hands_the_replicas_over_first():
    store, rec, _ = make(dict(SPEC, replicas=5))
    rec.reconcile(body(store))
    assert store.get("Deployment", NS, "coder-worker")["spec"]["replicas"] == 5
    switched = body(store)
    del switched["spec"]["replicas"]
    switched["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 10}
    switched["spec"]["resources"] = {"requests": {"cpu": "1"}}
    store.objects[("DeepAgent", NS, "coder")] = switched
    store.applied_replicas.clear()
    rec.reconcile(switched)
    deployment = [r for r in store.applied_replicas if r[1] == "Deployment"]
    # The hand-over manager takes the count first (never below the current 5), then the
    # operator's apply drops the field without the Deployment falling to 1.
    assert deployment == [(HANDOFF_MANAGER, "Deployment", 5), (MANAGER, "Deployment", None)]
    assert store.get("Deployment", NS, "coder-worker")["spec"]["replicas"] == 5
    store.applied_replicas.clear()
    rec.reconcile(body(store))
    assert store.applied_replicas == []


def test_new_autoscaled_deployment_starts_at_the_minimum():
    store, rec, _ = make(AUTOSCALED)
    rec.reconcile(body(store))
    assert store.get("Deployment", NS, "coder-worker")["spec"]["replicas"] == 2
    assert store.replicas_owners[("Deployment", NS, "coder-worker")] == {HANDOFF_MANAGER}


# -- 6. bounded state -------------------------------------------------------------------------
def test_state_is_empty_after_1000_agents_come_and_go():
    store = MemoryStore()
    store, rec, _ = make(store=store)
    names = [f"a{i}" for i in range(1000)]
    for name in names:
        store.create(agent(copy.deepcopy(SPEC), name=name))
        rec.reconcile(body(store, name))
    assert rec.state_size()["agents"] == 1000
    for name in names:
        children = [
            (kind, copy.deepcopy(obj))
            for (kind, ns, _), obj in store.objects.items()
            if (obj["metadata"].get("labels") or {}).get("deepagent.dev/agent") == name
        ]
        store.delete("DeepAgent", NS, name)
        rec.forget(NS, name)
        # Late events of the garbage-collected children arrive after the agent is gone.
        for kind, child in children:
            rec.on_child_event(kind, "MODIFIED", child)
            store.delete(kind, NS, child["metadata"]["name"])
            rec.on_child_event(kind, "DELETED", child)
        rec.on_child_event("Deployment", None, children[0][1])  # a relist's "listed" event
    rec.retain({(NS, "coder")})  # the resync's listing drops whatever was listed meanwhile
    rec.forget(NS, "coder")
    assert rec.state_size() == {"agents": 0, "locks": 0, "refresh_pending": 0}


def test_forget_never_drops_a_lock_that_a_reconcile_holds():
    store, rec, _ = make()
    inside = threading.Event()
    release = threading.Event()
    active = []
    overlap = []
    real_get = store.get

    def slow_get(kind, ns, name):
        if kind == "Deployment" and threading.current_thread().name == "first":
            inside.set()
            release.wait(10)
        return real_get(kind, ns, name)

    store.get = slow_get  # type: ignore[method-assign]
    real_reconcile_locked = rec._reconcile_locked

    def tracked(b, thorough=False):
        active.append(1)
        overlap.append(len(active))
        try:
            return real_reconcile_locked(b, thorough)
        finally:
            active.pop()

    rec._reconcile_locked = tracked  # type: ignore[method-assign]
    first = threading.Thread(target=rec.reconcile, args=(body(store),), name="first")
    first.start()
    assert inside.wait(10)
    forget = threading.Thread(target=rec.forget, args=(NS, "coder"))
    forget.start()
    second = threading.Thread(target=rec.reconcile, args=(body(store),), name="second")
    second.start()
    time.sleep(0.2)
    assert forget.is_alive() and second.is_alive()  # both wait for the first reconcile
    assert rec.state_size()["locks"] == 1
    release.set()
    for t in (first, forget, second):
        t.join(10)
    assert max(overlap) == 1  # never two reconciles of one agent at once
    rec.forget(NS, "coder")
    assert rec.state_size() == {"agents": 0, "locks": 0, "refresh_pending": 0}


# -- the resync reads no child the watch already shows -----------------------------------------
def test_resync_compares_watched_children_from_the_watch_and_reads_before_writing():
    store, rec, _ = make()
    rec.reconcile(body(store))
    for kind, name in [
        ("Deployment", "coder-worker"),
        ("StatefulSet", "coder-redis"),
        ("Service", "coder-redis"),
        ("NetworkPolicy", "coder-redis"),
    ]:
        rec.on_child_event(kind, None, store.get(kind, NS, name))  # the watch's listing
    reads: list[tuple[str, str]] = []
    real_get = store.get

    def counting_get(kind, ns, name):
        reads.append((kind, name))
        return real_get(kind, ns, name)

    agent_body = body(store)
    store.get = counting_get  # type: ignore[method-assign]
    store.writes.clear()
    rec.reconcile(agent_body, thorough=True)
    # Only what no watch covers: the referenced Secret and the Redis password Secret.
    assert sorted(reads) == [("Secret", "coder-redis-auth"), ("Secret", "keys")]
    assert store.child_writes() == []
    # A stale cache never causes a write: the children are read again first.
    stale = store.objects[("Deployment", NS, "coder-worker")]
    old = copy.deepcopy(stale)
    old["spec"]["template"]["metadata"]["annotations"]["deepagent.dev/config-hash"] = "old"
    rec.agents.peek((NS, "coder")).children[("Deployment", "coder-worker")] = Cached(old)
    reads.clear()
    rec.reconcile(agent_body, thorough=True)
    assert ("Deployment", "coder-worker") in reads and store.child_writes() == []


def test_a_child_without_its_agent_label_is_still_its_agents():
    store, rec, _ = make()
    rec.reconcile(body(store))
    np = store.objects[("NetworkPolicy", NS, "coder-redis")]
    del np["metadata"]["labels"]["deepagent.dev/agent"]  # a hand edit
    assert rec.on_child_event("NetworkPolicy", "MODIFIED", copy.deepcopy(np)) == "reconciled"
    restored = store.get("NetworkPolicy", NS, "coder-redis")
    assert restored["metadata"]["labels"]["deepagent.dev/agent"] == "coder"
