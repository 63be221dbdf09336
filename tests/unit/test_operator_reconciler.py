"""Reconciler logic on an in-memory object store (fast; tests/k8s runs it against a real API).

The store only keeps objects and resourceVersions; it stands in for the API server the
way a dict stands in for a database, to check which writes the reconciler decides to make.
"""

from __future__ import annotations

import base64
import copy
import itertools
from typing import Any

import pytest

from deepagent_operator import MANAGER
from deepagent_operator.config import OperatorConfig
from deepagent_operator.kube import ApiError
from deepagent_operator.model import SpecError
from deepagent_operator.reconcile import Reconciler
from deepagent_operator.status import ProbeResult


class MemoryStore:
    """Objects by (kind, namespace, name); server-side apply replaces what the operator's
    field manager applies, except ``spec.replicas``, which another field manager may hold
    (as the API server keeps a field that some manager still owns)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self._rv = itertools.count(1)
        #: (kind, name) -> message: applies of that child fail with HTTP 422
        self.reject: dict[tuple[str, str], str] = {}
        #: key -> field managers that own spec.replicas
        self.replicas_owners: dict[tuple[str, str, str], set[str]] = {}
        #: every (manager, key, spec.replicas) applied, in order
        self.applied_replicas: list[tuple[str, str, Any]] = []
        self.probes: list[tuple[str, int, str]] = []

    def _key(self, obj):
        return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])

    def get(self, kind, ns, name):
        obj = self.objects.get((kind, ns, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind, ns=None, label_selector=None):
        return [copy.deepcopy(o) for (k, n, _), o in self.objects.items() if k == kind]

    def apply(self, obj, manager=MANAGER):
        key = self._key(obj)
        if (key[0], key[2]) in self.reject:
            self.writes.append(("rejected", *key))
            raise ApiError(422, {"message": self.reject[(key[0], key[2])]}, "PATCH", key[2])
        cur = self.objects.get(key)
        replicas = (obj.get("spec") or {}).get("replicas")
        self.applied_replicas.append((manager, key[0], replicas))
        owners = self.replicas_owners.setdefault(key, set())
        if manager == MANAGER:
            new = copy.deepcopy(obj)
            new["metadata"]["generation"] = (cur or {}).get("metadata", {}).get("generation", 0) + 1
            new["status"] = (cur or {}).get("status", {})
            if key[0] == "Deployment" and replicas is None:
                owners.discard(manager)
                kept = (cur or {}).get("spec", {}).get("replicas") if owners else None
                new["spec"]["replicas"] = 1 if kept is None else kept
        else:  # a partial apply of another field manager: replicas only
            new = copy.deepcopy(cur)
            new["spec"]["replicas"] = replicas
        if replicas is not None:
            owners.add(manager)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        new["metadata"]["managedFields"] = [
            {"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
            for m in sorted(owners)
        ]
        self.objects[key] = new
        self.writes.append(("apply", *key))
        return copy.deepcopy(new)

    def patch(self, kind, ns, name, patch):
        obj = self.objects[(kind, ns, name)]
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if rv is not None and rv != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, {"message": "conflict"}, "PATCH", name)
        obj.setdefault("data", {}).update(patch.get("data") or {})
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.writes.append(("patch", kind, ns, name))
        return copy.deepcopy(obj)

    def create(self, obj):
        key = self._key(obj)
        if key in self.objects:
            return None
        self.writes.append(("create", *key))
        new = copy.deepcopy(obj)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)

    def delete(self, kind, ns, name):
        self.writes.append(("delete", kind, ns, name))
        return self.objects.pop((kind, ns, name), None) is not None

    def patch_status(self, kind, ns, name, patch):
        obj = self.objects.get((kind, ns, name))
        if obj is None:
            raise ApiError(404, {"message": "not found"}, "PATCH", name)
        status = obj.setdefault("status", {})
        for k, v in patch.items():
            if v is None:
                status.pop(k, None)
            elif isinstance(v, dict) and isinstance(status.get(k), dict):
                status[k] = {**status[k], **v}
                status[k] = {kk: vv for kk, vv in status[k].items() if vv is not None}
            else:
                status[k] = v
        self.writes.append(("status", kind, ns, name))
        return copy.deepcopy(obj)

    def child_writes(self):
        return [w for w in self.writes if w[0] != "status"]

    #: what the Redis of every agent answers to AUTH + PING
    probe_result = ProbeResult(True, "RedisReady", "Redis answers AUTH and PING")

    def probe(self, host, port, password, timeout):
        self.probes.append((host, port, password))
        return self.probe_result


def agent(spec, name="coder", ns="agents"):
    return {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


SPEC = {
    "graph": "pkg.mod:agent",
    "image": "img:1",
    "temporal": {"address": "temporal:7233"},
    "envFrom": [{"secretRef": {"name": "keys"}}],
    "streaming": {"redis": {"mode": "Managed"}},
}


@pytest.fixture
def world():
    store = MemoryStore()
    store.create(
        {
            "kind": "Secret",
            "metadata": {"name": "keys", "namespace": "agents"},
            "data": {"K": base64.b64encode(b"v1").decode()},
        }
    )
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


def test_first_reconcile_creates_then_second_writes_nothing(world):
    store, rec, events = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    kinds = sorted(w[1] for w in store.child_writes())
    assert kinds == ["Deployment", "NetworkPolicy", "Secret", "Service", "StatefulSet"]
    assert {e[1] for e in events} >= {"Created", "PhasePending"}
    store.writes.clear()
    rec.reconcile(store.get("DeepAgent", "agents", "coder"), thorough=True)
    fresh = Reconciler(  # a "restarted" operator
        store, OperatorConfig(), event=lambda *a: None, redis_probe=store.probe
    )
    fresh.reconcile(store.get("DeepAgent", "agents", "coder"), thorough=True)
    assert store.writes == []


def test_referenced_secret_change_rolls_once(world):
    store, rec, _ = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    dep = store.get("Deployment", "agents", "coder-worker")
    h1 = dep["spec"]["template"]["metadata"]["annotations"]["deepagent.dev/config-hash"]
    store.objects[("Secret", "agents", "keys")]["data"]["K"] = base64.b64encode(b"v2").decode()
    store.writes.clear()
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    assert [w[1] for w in store.child_writes()] == ["Deployment"]
    dep = store.get("Deployment", "agents", "coder-worker")
    assert dep["spec"]["template"]["metadata"]["annotations"]["deepagent.dev/config-hash"] != h1


def test_missing_secret_fails_without_children(world):
    store, rec, events = world
    store.delete("Secret", "agents", "keys")
    store.writes.clear()
    with pytest.raises(SpecError) as exc:
        rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    assert exc.value.field == "spec.envFrom[0].secretRef.name"
    assert store.child_writes() == []
    status = store.get("DeepAgent", "agents", "coder")["status"]
    assert status["phase"] == "Failed"
    assert ("Warning", "SecretNotFound") in {(e[0], e[1]) for e in events}


def test_disabling_redis_deletes_its_children_but_keeps_the_secret(world):
    store, rec, _ = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    body = store.get("DeepAgent", "agents", "coder")
    body["spec"]["streaming"]["redis"]["mode"] = "Disabled"
    store.objects[("DeepAgent", "agents", "coder")] = body
    store.writes.clear()
    rec.reconcile(body)
    deleted = sorted(w[1] for w in store.writes if w[0] == "delete")
    assert deleted == ["NetworkPolicy", "Service", "StatefulSet"]
    assert store.get("Secret", "agents", "coder-redis-auth") is not None
    status = store.get("DeepAgent", "agents", "coder")["status"]
    assert status["redis"] == {"mode": "Disabled", "status": "Disabled", "ready": False}


def test_status_follows_children_and_is_written_only_on_change(world):
    store, rec, _ = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    assert store.get("DeepAgent", "agents", "coder")["status"]["phase"] == "Pending"
    dep = store.objects[("Deployment", "agents", "coder-worker")]
    dep["status"] = {"observedGeneration": 1, "readyReplicas": 1, "availableReplicas": 1,
                     "updatedReplicas": 1}  # fmt: skip
    sts = store.objects[("StatefulSet", "agents", "coder-redis")]
    sts["status"] = {"readyReplicas": 1}
    # Each child's change reaches the status through its own watch event (no reads).
    assert rec.on_child_event("StatefulSet", "MODIFIED", sts) == "status"
    assert rec.on_child_event("Deployment", "MODIFIED", dep) == "status"
    assert store.get("DeepAgent", "agents", "coder")["status"]["phase"] == "Ready"
    store.writes.clear()
    assert rec.on_child_event("Deployment", "MODIFIED", dep) == "unchanged"
    rec.refresh_status("agents", "coder")
    assert store.writes == []


def test_a_status_refresh_reads_nothing_and_a_queued_event_never_undoes_a_write(world):
    """Status refreshes compute from the watches' cache: no reads while the cached DeepAgent
    is as new as the last reconcile's; a queued (older) child event never replaces what a
    later write returned."""
    store, rec, _ = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    queued = store.get("Deployment", "agents", "coder-worker")  # an event still in the queue
    body = store.get("DeepAgent", "agents", "coder")
    body["spec"]["replicas"], body["metadata"]["generation"] = 3, 2
    store.objects[("DeepAgent", "agents", "coder")] = body
    rec.observe_agent(store.get("DeepAgent", "agents", "coder"))
    rec.reconcile(body)  # the Deployment now asks for 3 replicas (a newer resourceVersion)
    reads: list[tuple[str, ...]] = []
    get = store.get
    store.get = lambda *key: reads.append(key) or get(*key)  # type: ignore[method-assign]
    queued["status"] = {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}
    assert rec.on_child_event("Deployment", "MODIFIED", queued) == "status"
    watched = lambda: [r for r in reads if r[0] != "Secret"]  # noqa: E731
    assert watched() == [], "only the Redis password (never watched) for the AUTH probe"
    assert (
        rec.agents.peek(("agents", "coder"))
        .children[("Deployment", "coder-worker")]
        .load()["spec"]["replicas"]
        == 3
    ), "the queued event did not replace the newer write"
    assert store.objects[("DeepAgent", "agents", "coder")]["status"]["phase"] != "Ready"
    # A cached DeepAgent older than what the last reconcile worked from is read again.
    rec.agents.peek(("agents", "coder")).reconciled_generation = 3
    rec.refresh_status("agents", "coder")
    assert watched() == [("DeepAgent", "agents", "coder")]


def test_a_status_from_a_read_is_not_undone_by_a_queued_event(world):
    """A reconcile that read children newer than the watch's cache computes the status from
    them; an older event of one of them, still queued, must not then flip the status back
    (it did: Ready -> Degraded -> Ready while Redis came up)."""
    store, rec, events = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    dep = store.objects[("Deployment", "agents", "coder-worker")]
    sts = store.objects[("StatefulSet", "agents", "coder-redis")]
    queued = copy.deepcopy(sts)  # the watch's copy: Redis not ready yet
    ready = {"observedGeneration": 1, "readyReplicas": 1, "availableReplicas": 1,
             "updatedReplicas": 1}  # fmt: skip
    for obj, status in ((dep, ready), (sts, {"readyReplicas": 1})):
        obj["status"] = status
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 100)
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))  # reads them
    assert store.get("DeepAgent", "agents", "coder")["status"]["phase"] == "Ready"
    rec.on_child_event("StatefulSet", "MODIFIED", queued)
    assert store.get("DeepAgent", "agents", "coder")["status"]["phase"] == "Ready"
    assert "PhaseDegraded" not in {e[1] for e in events}


def test_deleted_or_edited_child_is_restored(world):
    store, rec, _ = world
    rec.reconcile(store.get("DeepAgent", "agents", "coder"))
    svc = store.get("Service", "agents", "coder-redis")
    store.delete("Service", "agents", "coder-redis")
    assert rec.on_child_event("Service", "DELETED", svc) == "reconciled"
    assert store.get("Service", "agents", "coder-redis") is not None
    dep = store.objects[("Deployment", "agents", "coder-worker")]
    dep["spec"]["replicas"] = 7
    dep["metadata"]["generation"] += 1
    assert rec.on_child_event("Deployment", "MODIFIED", copy.deepcopy(dep)) == "reconciled"
    assert store.get("Deployment", "agents", "coder-worker")["spec"]["replicas"] == 1
