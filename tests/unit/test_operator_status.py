"""Status as a pure function of the children's status."""

from __future__ import annotations

from deepagent_operator import crd
from deepagent_operator.model import STATUS_KEYS, DeepAgentStatus, SpecError
from deepagent_operator.status import compute_status


def dep(replicas=2, ready=2, available=None, updated=None, generation=1, observed=1):
    available = ready if available is None else available
    updated = replicas if updated is None else updated
    return {
        "metadata": {"name": "coder-worker", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "availableReplicas": available,
            "updatedReplicas": updated,
        },
    }


def sts(ready=1):
    return {"metadata": {"name": "coder-redis"}, "status": {"readyReplicas": ready}}


def status(**kw):
    args = dict(
        name="coder",
        namespace="agents",
        generation=3,
        redis_mode="Managed",
        task_queue="coder",
        desired_replicas=2,
        deployment=dep(),
        statefulset=sts(),
        error=None,
        previous=None,
        now="2026-01-01T00:00:00Z",
    )
    args.update(kw)
    return compute_status(**args)


def conds(st):
    return {c["type"]: c for c in st["conditions"]}


def test_ready_when_workers_and_redis_ready():
    st = status()
    assert st["phase"] == "Ready"
    assert st["ready"] == "2/2"
    assert st["observedGeneration"] == 3
    c = conds(st)
    assert all(
        c[t]["status"] == "True" for t in ("Ready", "SpecValid", "WorkersAvailable", "RedisReady")
    )
    assert c["Ready"]["observedGeneration"] == 3
    assert st["workers"] == {
        "deployment": "coder-worker",
        "replicas": 2,
        "readyReplicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
    }
    assert st["redis"] == {
        "mode": "Managed",
        "endpoint": "coder-redis.agents.svc:6379",
        "secretName": "coder-redis-auth",
        "status": "Ready",
        "ready": True,
    }
    assert st["taskQueue"] == "coder"


def test_pending_until_pods_ready():
    st = status(deployment=dep(ready=0), statefulset=sts(0))
    assert st["phase"] == "Pending"
    c = conds(st)
    assert c["WorkersAvailable"]["status"] == "False"
    assert c["WorkersAvailable"]["reason"] == "WorkersNotReady"
    assert c["Ready"]["message"] == "0/2 workers ready"
    assert st["ready"] == "0/2"


def test_no_deployment_yet():
    st = status(deployment=None, statefulset=None)
    assert st["phase"] == "Pending"
    assert conds(st)["WorkersAvailable"]["reason"] == "DeploymentNotFound"
    assert conds(st)["RedisReady"]["reason"] == "StatefulSetNotFound"
    assert st["ready"] == "0/2"


def test_degraded_only_after_ready():
    # a first rollout with some workers ready is still Pending
    assert status(deployment=dep(ready=1, available=1))["phase"] == "Pending"
    prev = status()
    assert status(deployment=dep(ready=1, available=1), previous=prev)["phase"] == "Degraded"
    st = status(statefulset=sts(0), previous=prev)
    assert st["phase"] == "Degraded"
    assert conds(st)["RedisReady"]["status"] == "False"


def test_rolling_out_keeps_ready_while_capacity_is_there():
    st = status(deployment=dep(generation=2, observed=1))
    assert conds(st)["WorkersAvailable"]["reason"] == "RollingOut"
    assert conds(st)["WorkersAvailable"]["status"] == "True"
    assert st["phase"] == "Ready"
    st = status(deployment=dep(ready=2, available=2, updated=1))
    assert conds(st)["WorkersAvailable"]["reason"] == "RollingOut"
    st = status(deployment=dep(ready=1, available=1, updated=1), previous=status())
    assert conds(st)["WorkersAvailable"] == {
        **conds(st)["WorkersAvailable"],
        "status": "False",
        "reason": "RollingOut",
    }
    assert st["phase"] == "Degraded"


def test_scaled_to_zero_is_ready():
    st = status(
        deployment=dep(replicas=0, ready=0),
        desired_replicas=0,
        redis_mode="Disabled",
        statefulset=None,
    )
    assert st["phase"] == "Ready"
    assert st["ready"] == "0/0"
    assert st["redis"]["status"] == "Disabled"


def test_spec_error_fails_with_field_and_fix():
    err = SpecError(
        "spec.envFrom[0].secretRef.name",
        'Secret "model-keys" not found',
        "create the Secret",
        reason="SecretNotFound",
    )
    st = status(error=err)
    assert st["phase"] == "Failed"
    c = conds(st)
    assert c["SpecValid"]["status"] == "False"
    assert c["SpecValid"]["reason"] == "SecretNotFound"
    assert "spec.envFrom[0].secretRef.name" in c["Ready"]["message"]
    assert "create the Secret" in c["Ready"]["message"]


def test_keep_spec_condition_from_previous():
    err = SpecError("spec.image", "no image", "set spec.image", reason="ImageNotSet")
    failed = status(error=err)
    st = status(previous=failed, keep_spec_condition=True)
    assert st["phase"] == "Failed"
    assert conds(st)["SpecValid"]["reason"] == "ImageNotSet"


def test_transition_times_are_kept_while_status_unchanged():
    first = status(now="2026-01-01T00:00:00Z")
    same = status(previous=first, now="2026-02-02T00:00:00Z")
    assert same == first  # nothing to write
    changed = status(
        previous=first, deployment=dep(ready=0, available=0), now="2026-03-03T00:00:00Z"
    )
    c = conds(changed)
    assert c["WorkersAvailable"]["lastTransitionTime"] == "2026-03-03T00:00:00Z"
    assert c["RedisReady"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_external_redis():
    st = status(redis_mode="External", statefulset=None)
    assert st["phase"] == "Ready"
    assert st["redis"]["status"] == "External"


def test_status_keys_are_the_models_camel_case_aliases():
    aliases = tuple(f.alias for f in DeepAgentStatus.model_fields.values())
    assert STATUS_KEYS == aliases
    assert "taskQueue" in STATUS_KEYS and "observedGeneration" in STATUS_KEYS


def test_crd_status_schema_is_generated_from_the_model():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]
    assert status == crd.status_schema()
    assert tuple(status["properties"]) == STATUS_KEYS
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]
    assert status["properties"]["phase"]["enum"] == ["Pending", "Ready", "Degraded", "Failed"]
    workers = status["properties"]["workers"]["properties"]
    assert workers["readyReplicas"] == {"type": "integer", "format": "int32"}


def test_computed_status_is_a_valid_status_model():
    for st in (status(), status(error=SpecError("spec.x", "m", "f")), status(deployment=None)):
        assert DeepAgentStatus.model_validate(st).dump() == st


def test_previous_status_with_unknown_fields_is_read():
    prev = status()
    prev["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:00:00Z"
    assert status(previous=prev)["phase"] == "Ready"
