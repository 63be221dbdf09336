"""The pure decisions of a reconcile (plan.py): plain dicts in, what to write out."""

from __future__ import annotations

import copy

from deepagent_operator.children import HASH_ANNOTATION, build_children
from deepagent_operator.config import OperatorConfig
from deepagent_operator.model import STATUS_KEYS, SpecError, parse_spec
from deepagent_operator.plan import (
    StatusInputs,
    child_key,
    not_owned_error,
    owns_field,
    plan_children,
    plan_status,
    quantity_equal,
    rejection_error,
    replicas_handoff,
    status_digest,
    unwanted_children,
    write_event,
)

CONFIG = OperatorConfig(default_image="img:1", default_temporal_address="temporal:7233")
UID = "uid-coder"


def agent(spec, generation=1):
    return {
        "apiVersion": "deepagent.dev/v1alpha1",
        "kind": "DeepAgent",
        "metadata": {"name": "coder", "namespace": "agents", "uid": UID, "generation": generation},
        "spec": spec,
    }


MANAGED = {"graph": "pkg.mod:agent", "streaming": {"redis": {"mode": "Managed"}}}
DISABLED = {"graph": "pkg.mod:agent"}


def desired(spec):
    body = agent(spec)
    return build_children(body, parse_spec(spec), CONFIG, "h1")


def as_live(obj):
    """What the API server returns for an applied manifest: the same plus defaults."""
    live = copy.deepcopy(obj)
    live["metadata"].update(uid="child-uid", resourceVersion="7", generation=1)
    live["status"] = {"observedGeneration": 1}
    if live["kind"] == "Deployment":
        live["spec"]["progressDeadlineSeconds"] = 600
        live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    return live


def owned(kind, name, uid=UID, controller=True):
    ref = {"uid": uid, "controller": controller}
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": [ref]}}


def test_nothing_changed_plans_no_writes():
    manifests = desired(MANAGED)
    observed = {child_key(o): as_live(o) for o in manifests}
    plan = plan_children(manifests, unwanted_children("coder", parse_spec(MANAGED)), observed, UID)
    assert plan.empty
    assert {kind for kind, _ in plan.unchanged} == {
        "Deployment",
        "StatefulSet",
        "Service",
        "NetworkPolicy",
    }


def test_missing_or_drifted_children_are_applied():
    manifests = desired(MANAGED)
    observed = {child_key(o): as_live(o) for o in manifests}
    observed[("Service", "coder-redis")] = None
    observed[("Deployment", "coder-worker")]["spec"]["replicas"] = 5
    plan = plan_children(manifests, [], observed, UID)
    assert sorted(child_key(o) for o in plan.apply) == [
        ("Deployment", "coder-worker"),
        ("Service", "coder-redis"),
    ]
    assert set(plan.unchanged) == {("StatefulSet", "coder-redis"), ("NetworkPolicy", "coder-redis")}


def test_quantities_compare_by_value():
    assert quantity_equal("0.5", "500m") and quantity_equal("1Gi", "1024Mi")
    assert not quantity_equal("1G", "1Gi") and not quantity_equal("x", "x1")
    spec = dict(DISABLED, resources={"requests": {"cpu": "0.5", "memory": "1Gi"}})
    (dep,) = desired(spec)
    live = as_live(dep)
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "500m", "memory": "1024Mi"}
    }
    assert plan_children([dep], [], {child_key(dep): live}, UID).empty


def test_redis_disabled_deletes_its_children_but_not_the_secret():
    spec = parse_spec(DISABLED)
    unwanted = unwanted_children("coder", spec)
    assert unwanted == [
        ("StatefulSet", "coder-redis"),
        ("Service", "coder-redis"),
        ("NetworkPolicy", "coder-redis"),
        ("HorizontalPodAutoscaler", "coder-worker"),
        ("Deployment", "coder-gateway"),
        ("Service", "coder-gateway"),
    ]
    assert ("Secret", "coder-redis-auth") not in unwanted  # reused if Managed comes back
    observed = {
        ("StatefulSet", "coder-redis"): owned("StatefulSet", "coder-redis"),
        ("Service", "coder-redis"): owned("Service", "coder-redis", uid="someone-else"),
        ("NetworkPolicy", "coder-redis"): owned("NetworkPolicy", "coder-redis", controller=False),
    }
    plan = plan_children([], unwanted, observed, UID)
    # not observed (HPA), not ours (Service) or not controlled (NetworkPolicy): left alone
    assert plan.delete == [("StatefulSet", "coder-redis")]


def test_managed_redis_and_autoscaling_want_their_children():
    spec = parse_spec(
        dict(MANAGED, autoscaling={"maxReplicas": 3}, resources={"requests": {"cpu": "1"}})
    )
    assert unwanted_children("coder", spec) == [
        ("Deployment", "coder-gateway"),
        ("Service", "coder-gateway"),
    ]


def foreign(obj, refs=None):
    live = as_live(obj)
    live["metadata"]["ownerReferences"] = refs or []
    return live


def test_objects_the_agent_does_not_control_are_conflicts_and_nothing_is_written():
    manifests = desired(MANAGED)
    observed = {child_key(o): None for o in manifests}
    service = next(o for o in manifests if o["kind"] == "Service")
    for refs in (
        [],  # nobody's
        [{"uid": "other-agent", "controller": True}],
        [{"uid": UID, "controller": False}],  # ours but not as controller: not adopted
    ):
        observed[child_key(service)] = foreign(service, refs)
        plan = plan_children(manifests, [], observed, UID)
        assert plan.conflicts == [("Service", "coder-redis")]
        assert plan.apply == [] and plan.unchanged == {}
    err = not_owned_error(plan.conflicts)
    assert err.reason == "ChildNotOwned"
    assert "Service coder-redis already exists and is not controlled by this DeepAgent" in str(err)
    assert "rename the DeepAgent" in err.fix and "delete Service coder-redis" in err.fix
    two = not_owned_error([("Service", "a-redis"), ("Secret", "a-redis-auth")])
    assert "Service a-redis and Secret a-redis-auth already exist and are not" in str(two)


def test_rejections_report_what_the_server_said():
    err = rejection_error(
        "Deployment", "x-worker", 'Deployment.apps "x-worker" is invalid: spec.template: bad'
    )
    assert err.reason == "ChildRejected"
    assert 'Deployment.apps "x-worker" is invalid: spec.template: bad' in str(err)
    err = rejection_error("StatefulSet", "x-redis", "spec.template.spec.tolerations: bad")
    assert err.reason == "ChildRejected"  # a 422 on the StatefulSet is not always immutability
    err = rejection_error(
        "StatefulSet",
        "x-redis",
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas' ...",
    )
    assert err.reason == "ImmutableField" and "delete StatefulSet x-redis" in err.fix
    err = rejection_error(
        "StatefulSet",
        "x-redis",
        "spec.volumeClaimTemplates: Invalid value: [...]: field is immutable",
    )
    assert err.reason == "ImmutableField" and err.field == "spec.streaming.redis.storage"


def _managed_fields(manager, fields):
    return [{"manager": manager, "operation": "Apply", "fieldsV1": fields}]


def test_replicas_are_handed_over_before_the_operator_stops_applying_them():
    scaling = parse_spec(
        dict(
            DISABLED,
            autoscaling={"minReplicas": 5, "maxReplicas": 9},
            resources={"requests": {"cpu": "1"}},
        )
    )
    ours = {"f:spec": {"f:replicas": {}, "f:template": {}}}
    live = {
        "metadata": {"managedFields": _managed_fields("deepagent-operator", ours)},
        "spec": {"replicas": 5},
    }
    assert owns_field(live, "deepagent-operator", "spec", "replicas")
    assert replicas_handoff(scaling, live, "deepagent-operator") == 5
    live["spec"]["replicas"] = 7  # never less than now
    assert replicas_handoff(scaling, live, "deepagent-operator") == 7
    live["spec"]["replicas"] = 2  # at least the HPA's minimum
    assert replicas_handoff(scaling, live, "deepagent-operator") == 5
    # Nothing to hand over: no HPA, no Deployment yet, or the operator no longer owns it.
    assert replicas_handoff(parse_spec(DISABLED), live, "deepagent-operator") is None
    assert replicas_handoff(scaling, None, "deepagent-operator") is None
    live["metadata"]["managedFields"] = _managed_fields("deepagent-operator", {"f:spec": {}})
    assert replicas_handoff(scaling, live, "deepagent-operator") is None


def test_write_events_name_what_happened():
    (dep,) = desired(DISABLED)
    assert write_event("Deployment", "coder-worker", None, dep)[0] == "Created"
    before = copy.deepcopy(dep)
    before["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION] = "h0"
    reason, message = write_event("Deployment", "coder-worker", before, dep)
    assert reason == "RollingWorkers" and "h0 -> h1" in message
    assert write_event("Deployment", "coder-worker", dep, dep)[0] == "Updated"


def _deployment(ready):
    return {
        "metadata": {"name": "coder-worker", "generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": 1,
        },
    }


def test_status_from_observed_objects_and_only_changes_are_patched():
    inputs = StatusInputs.of(agent(DISABLED), parse_spec(DISABLED))
    assert (inputs.redis_mode, inputs.task_queue, inputs.desired_replicas) == (
        "Disabled",
        "coder",
        1,
    )
    kw = dict(statefulset=None, error=None, now="2026-01-01T00:00:00Z")
    pending = plan_status(inputs, deployment=_deployment(0), previous={}, **kw)
    assert pending.status["phase"] == "Pending"
    assert pending.patch == pending.status  # first write: everything
    assert set(pending.patch) <= set(STATUS_KEYS)
    assert ("Normal", "PhasePending") in {e[:2] for e in pending.events}

    same = plan_status(inputs, deployment=_deployment(0), previous=pending.status, **kw)
    assert same.patch == {} and same.events == []

    ready = plan_status(inputs, deployment=_deployment(1), previous=pending.status, **kw)
    assert ready.status["phase"] == "Ready"
    assert set(ready.patch) == {"phase", "ready", "conditions", "workers"}
    assert [e[:2] for e in ready.events] == [("Normal", "PhaseReady")]


def test_status_of_an_invalid_spec_uses_the_raw_spec_and_warns():
    body = agent({"graph": "bad", "replicas": 3, "taskQueue": "q"})
    inputs = StatusInputs.of(body, None)
    assert (inputs.redis_mode, inputs.task_queue, inputs.desired_replicas) == ("Disabled", "q", 3)
    err = SpecError("spec.graph", "does not match", "fix spec.graph")
    plan = plan_status(inputs, deployment=None, statefulset=None, error=err, previous={})
    assert plan.status["phase"] == "Failed"
    assert ("Warning", "InvalidSpec", str(err)) in plan.events
    assert ("Warning", "PhaseFailed") in {e[:2] for e in plan.events}


def test_status_digest_ignores_what_the_status_does_not_read():
    dep = _deployment(1)
    noisy = copy.deepcopy(dep)
    noisy["metadata"]["resourceVersion"] = "99"
    noisy["status"]["conditions"] = [{"type": "Progressing"}]
    assert status_digest(noisy) == status_digest(dep)
    noisy["status"]["readyReplicas"] = 0
    assert status_digest(noisy) != status_digest(dep)
