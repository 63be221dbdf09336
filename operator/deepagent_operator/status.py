"""Pure status computation: children's live status in, ``DeepAgent.status`` out."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .children import SpecError, redis_endpoint, redis_secret_name, worker_name

CONDITION_TYPES = ("Ready", "SpecValid", "WorkersAvailable", "RedisReady")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def worker_condition(
    deployment: Mapping[str, Any] | None, desired_replicas: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(WorkersAvailable condition, status.workers block)."""
    if deployment is None:
        return (
            _cond(
                "WorkersAvailable",
                False,
                "DeploymentNotFound",
                "the worker Deployment does not exist yet",
            ),
            {},
        )
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    want = spec.get("replicas", desired_replicas if desired_replicas is not None else 1)
    ready = int(st.get("readyReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    block = {
        "deployment": meta.get("name"),
        "replicas": int(want),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "availableReplicas": available,
    }
    observed = st.get("observedGeneration")
    generation = meta.get("generation")
    rolling = (observed is not None and generation is not None and observed < generation) or (
        updated < want
    )
    if want == 0:
        return _cond("WorkersAvailable", True, "ScaledToZero", "0 workers requested"), block
    if available >= want and ready >= want:
        if rolling:
            return (
                _cond(
                    "WorkersAvailable",
                    True,
                    "RollingOut",
                    f"{ready}/{want} workers ready; rolling out ({updated} updated)",
                ),
                block,
            )
        return (
            _cond(
                "WorkersAvailable",
                True,
                "MinimumReplicasAvailable",
                f"{ready}/{want} workers ready",
            ),
            block,
        )
    reason = "RollingOut" if rolling else "WorkersNotReady"
    return (_cond("WorkersAvailable", False, reason, f"{ready}/{want} workers ready"), block)


def redis_condition(
    mode: str, name: str, namespace: str, statefulset: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RedisReady condition, status.redis block)."""
    if mode == "Disabled":
        return (
            _cond(
                "RedisReady", True, "Disabled", "no Redis: tokens stream through Temporal (Phase 1)"
            ),
            {"mode": mode, "status": "Disabled", "ready": False},
        )
    if mode == "External":
        return (
            _cond(
                "RedisReady",
                True,
                "External",
                "external Redis; the workers report its health on /readyz and /metrics",
            ),
            {"mode": mode, "status": "External", "ready": True},
        )
    block = {
        "mode": mode,
        "endpoint": redis_endpoint(name, namespace),
        "secretName": redis_secret_name(name),
    }
    if statefulset is None:
        return (
            _cond(
                "RedisReady",
                False,
                "StatefulSetNotFound",
                "the Redis StatefulSet does not exist yet",
            ),
            {**block, "status": "Pending", "ready": False},
        )
    st = statefulset.get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    if ready >= 1:
        return (
            _cond("RedisReady", True, "RedisReady", "Redis is ready"),
            {**block, "status": "Ready", "ready": True},
        )
    return (
        _cond("RedisReady", False, "RedisNotReady", "Redis pod is not ready"),
        {**block, "status": "NotReady", "ready": False},
    )


def compute_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    redis_mode: str,
    task_queue: str | None,
    desired_replicas: int | None,
    deployment: Mapping[str, Any] | None,
    statefulset: Mapping[str, Any] | None,
    error: SpecError | None,
    previous: Mapping[str, Any] | None,
    keep_spec_condition: bool = False,
    config_hash: str | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The full ``status`` of a DeepAgent.

    ``keep_spec_condition`` keeps the previous SpecValid condition (used when only a child
    changed: the spec was validated by the last reconcile, not now).
    """
    previous = previous or {}
    prev_conds = {c.get("type"): c for c in previous.get("conditions") or []}
    if keep_spec_condition and "SpecValid" in prev_conds:
        pc = prev_conds["SpecValid"]
        spec_cond = {k: pc[k] for k in ("type", "status", "reason", "message") if k in pc}
    elif error is not None:
        spec_cond = _cond("SpecValid", False, error.reason, str(error))
    else:
        spec_cond = _cond("SpecValid", True, "Valid", "spec is valid")
    workers_cond, workers = worker_condition(deployment, desired_replicas)
    redis_cond, redis = redis_condition(redis_mode, name, namespace, statefulset)
    if config_hash is None:
        config_hash = (previous.get("workers") or {}).get("configHash")
    if config_hash:
        workers["configHash"] = config_hash
    workers.setdefault("deployment", worker_name(name))

    spec_ok = spec_cond["status"] == "True"
    if not spec_ok:
        ready_cond = _cond("Ready", False, spec_cond["reason"], spec_cond["message"])
        phase = "Failed"
    elif workers_cond["status"] != "True":
        ready_cond = _cond("Ready", False, workers_cond["reason"], workers_cond["message"])
        # Degraded: it was Ready before and lost capacity; a first rollout is Pending.
        phase = "Degraded" if previous.get("phase") in ("Ready", "Degraded") else "Pending"
    elif redis_cond["status"] != "True":
        ready_cond = _cond("Ready", False, redis_cond["reason"], redis_cond["message"])
        phase = "Degraded" if previous.get("phase") in ("Ready", "Degraded") else "Pending"
    else:
        ready_cond = _cond("Ready", True, "Ready", workers_cond["message"])
        phase = "Ready"

    ts = now or now_iso()
    conditions = []
    for cond in (ready_cond, spec_cond, workers_cond, redis_cond):
        prev = prev_conds.get(cond["type"])
        cond = dict(cond)
        if (
            prev is not None
            and prev.get("status") == cond["status"]
            and prev.get("lastTransitionTime")
        ):
            cond["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = ts
        if generation is not None:
            cond["observedGeneration"] = generation
        conditions.append(cond)

    out: dict[str, Any] = {
        "phase": phase,
        "ready": f"{workers.get('readyReplicas', 0)}/{workers.get('replicas', desired_replicas if desired_replicas is not None else 0)}",
        "conditions": conditions,
        "workers": workers,
        "redis": redis,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    if task_queue:
        out["taskQueue"] = task_queue
    return out


def status_differs(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when writing ``desired`` would change ``current`` (ignores unknown extra keys)."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items())
