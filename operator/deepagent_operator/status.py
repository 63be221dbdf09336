"""Pure status computation: children's live status in, ``DeepAgent.status`` out.

The status is built as a :class:`~.model.DeepAgentStatus` (the model the CRD's status schema
is generated from) and returned as its camelCase dict, the form the API takes.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from .children import (
    gateway_endpoint,
    gateway_key_ref,
    gateway_name,
    redis_endpoint,
    redis_secret_name,
    worker_name,
)
from .gateway_spec import GatewaySpec, GatewayStatus, SecretKeyRef
from .model import Condition, DeepAgentStatus, Phase, RedisStatus, SpecError, WorkersStatus


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Outcome of one AUTH + PING of a Managed Redis (:mod:`.redis_probe`): ``reason`` and
    ``message`` feed the RedisReady condition."""

    ok: bool
    reason: str
    message: str


def now_iso() -> str:
    """The current UTC time as Kubernetes writes timestamps (RFC 3339, seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(type_: str, ok: bool, reason: str, message: str) -> Condition:
    return Condition(type=type_, status="True" if ok else "False", reason=reason, message=message)


def worker_condition(
    deployment: Mapping[str, Any] | None, desired_replicas: int | None
) -> tuple[Condition, WorkersStatus]:
    """(WorkersAvailable condition, status.workers block)."""
    if deployment is None:
        return (
            _cond(
                "WorkersAvailable",
                False,
                "DeploymentNotFound",
                "the worker Deployment does not exist yet",
            ),
            WorkersStatus(),
        )
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    want = int(spec.get("replicas", desired_replicas if desired_replicas is not None else 1))
    ready = int(st.get("readyReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    block = WorkersStatus(
        deployment=meta.get("name"),
        replicas=want,
        ready_replicas=ready,
        updated_replicas=updated,
        available_replicas=available,
    )
    observed = st.get("observedGeneration")
    generation = meta.get("generation")
    rolling = (observed is not None and generation is not None and observed < generation) or (
        updated < want
    )
    if want == 0:
        return _cond("WorkersAvailable", True, "ScaledToZero", "0 workers requested"), block
    if available >= want and ready >= want:
        if rolling:
            message = f"{ready}/{want} workers ready; rolling out ({updated} updated)"
            return _cond("WorkersAvailable", True, "RollingOut", message), block
        message = f"{ready}/{want} workers ready"
        return _cond("WorkersAvailable", True, "MinimumReplicasAvailable", message), block
    reason = "RollingOut" if rolling else "WorkersNotReady"
    return _cond("WorkersAvailable", False, reason, f"{ready}/{want} workers ready"), block


def redis_condition(
    mode: str,
    name: str,
    namespace: str,
    statefulset: Mapping[str, Any] | None,
    probe: ProbeResult | None = None,
) -> tuple[Condition, RedisStatus]:
    """(RedisReady condition, status.redis block).

    ``probe`` is the operator's AUTH + PING of a Managed Redis whose pod is ready; a Redis
    that refuses the password or does not answer is not ready."""
    if mode == "Disabled":
        return (
            _cond(
                "RedisReady", True, "Disabled", "no Redis: tokens stream through Temporal (Phase 1)"
            ),
            RedisStatus(mode=mode, status="Disabled", ready=False),
        )
    if mode == "External":
        return (
            _cond(
                "RedisReady",
                True,
                "External",
                "external Redis; the workers report its health on /readyz and /metrics",
            ),
            RedisStatus(mode=mode, status="External", ready=True),
        )
    where = {
        "mode": mode,
        "endpoint": redis_endpoint(name, namespace),
        "secret_name": redis_secret_name(name),
    }
    if statefulset is None:
        return (
            _cond(
                "RedisReady",
                False,
                "StatefulSetNotFound",
                "the Redis StatefulSet does not exist yet",
            ),
            RedisStatus(**where, status="Pending", ready=False),
        )
    ready = int((statefulset.get("status") or {}).get("readyReplicas") or 0)
    if ready >= 1 and probe is not None and not probe.ok:
        return (
            _cond("RedisReady", False, probe.reason, probe.message),
            RedisStatus(**where, status="NotReady", ready=False),
        )
    if ready >= 1:
        message = probe.message if probe is not None else "Redis is ready"
        return (
            _cond("RedisReady", True, "RedisReady", message),
            RedisStatus(**where, status="Ready", ready=True),
        )
    return (
        _cond("RedisReady", False, "RedisNotReady", "Redis pod is not ready"),
        RedisStatus(**where, status="NotReady", ready=False),
    )


def gateway_status(
    name: str, namespace: str, gateway: GatewaySpec | None, deployment: Mapping[str, Any] | None
) -> GatewayStatus | None:
    """status.gateway: where clients reach it, with which key, how many replicas are ready
    (None while the gateway is not enabled). The gateway does not gate the Ready condition."""
    if gateway is None or not gateway.enabled:
        return None
    dep = deployment or {}
    want = int((dep.get("spec") or {}).get("replicas", gateway.replicas))
    ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
    secret, key = gateway_key_ref(name, gateway)
    return GatewayStatus(
        endpoint=gateway_endpoint(name, namespace, gateway),
        service_type=gateway.service.type,
        deployment=gateway_name(name),
        replicas=want,
        ready_replicas=ready,
        ready=f"{ready}/{want}",
        api_key_secret_ref=SecretKeyRef(name=secret, key=key),
    )


def _spec_condition(
    error: SpecError | None, previous: Mapping[str, Condition], keep: bool
) -> Condition:
    if keep and "SpecValid" in previous:
        # Only a child changed: the spec was validated by the last reconcile, not now.
        return previous["SpecValid"].model_copy(
            update={"last_transition_time": None, "observed_generation": None}
        )
    if error is not None:
        return _cond("SpecValid", False, error.reason, str(error))
    return _cond("SpecValid", True, "Valid", "spec is valid")


def _previous_conditions(previous: Mapping[str, Any]) -> dict[str, Condition]:
    return {
        c.get("type"): Condition.model_validate(c)
        for c in previous.get("conditions") or []
        if c.get("type")
    }


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
    redis_probe: ProbeResult | None = None,
    gateway: GatewayStatus | None = None,
) -> dict[str, Any]:
    """The full ``status`` of a DeepAgent (the dump of a :class:`DeepAgentStatus`).

    ``keep_spec_condition`` keeps the previous SpecValid condition (used when only a child
    changed: the spec was validated by the last reconcile, not now).
    """
    previous = previous or {}
    prev_conds = _previous_conditions(previous)
    spec_cond = _spec_condition(error, prev_conds, keep_spec_condition)
    workers_cond, workers = worker_condition(deployment, desired_replicas)
    redis_cond, redis = redis_condition(redis_mode, name, namespace, statefulset, redis_probe)
    if config_hash is None:
        config_hash = (previous.get("workers") or {}).get("configHash")
    if config_hash:
        workers.config_hash = config_hash
    if workers.deployment is None:
        workers.deployment = worker_name(name)

    was_ready = previous.get("phase") in ("Ready", "Degraded")
    phase: Phase
    if spec_cond.status != "True":
        ready_cond = _cond("Ready", False, spec_cond.reason or "", spec_cond.message or "")
        phase = "Failed"
    elif workers_cond.status != "True" or redis_cond.status != "True":
        blocking = workers_cond if workers_cond.status != "True" else redis_cond
        ready_cond = _cond("Ready", False, blocking.reason or "", blocking.message or "")
        # Degraded: it was Ready before and lost capacity; a first rollout is Pending.
        phase = "Degraded" if was_ready else "Pending"
    else:
        ready_cond = _cond("Ready", True, "Ready", workers_cond.message or "")
        phase = "Ready"

    ts = now or now_iso()
    conditions = []
    for cond in (ready_cond, spec_cond, workers_cond, redis_cond):
        prev = prev_conds.get(cond.type)
        # The transition time moves only when the condition's status flips.
        kept = prev.last_transition_time if prev and prev.status == cond.status else None
        conditions.append(
            cond.model_copy(
                update={
                    "last_transition_time": kept or ts,
                    "observed_generation": generation,
                }
            )
        )

    replicas = workers.replicas if workers.replicas is not None else (desired_replicas or 0)
    return DeepAgentStatus(
        observed_generation=generation,
        phase=phase,
        ready=f"{workers.ready_replicas or 0}/{replicas}",
        conditions=conditions,
        workers=workers,
        redis=redis,
        gateway=gateway,
        task_queue=task_queue or None,
    ).dump()
