"""The worker Deployment (and its HPA): the pods that run ``deepagent-temporal worker``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from deepagent_temporal.contract import WorkerEnv

from ..config import OperatorConfig
from ..model import DeepAgentSpec
from ..worker_spec import termination_grace_seconds
from .common import (
    CONTAINER_SECURITY,
    HASH_ANNOTATION,
    REDIS_PASSWORD_KEY,
    RUNTIME_POD_SECURITY,
    adopt,
    dump_list,
    labels,
    prune,
    redis_endpoint,
    redis_secret_name,
    selector,
    task_queue,
    worker_name,
)
from .references import resolve_image, resolve_temporal_address

TLS_MOUNT = "/etc/deepagent/temporal-tls"
WORKER_COMMAND = ["deepagent-temporal", "worker"]


def worker_env(
    name: str, namespace: str, spec: DeepAgentSpec, config: OperatorConfig
) -> list[dict[str, Any]]:
    """The worker container's environment: the runtime's ``WorkerEnv`` contract, then ``spec.env``.

    Entries follow ``WorkerEnv``'s declaration order, which puts the Redis password before
    the Redis URL: Kubernetes expands ``$(VAR)`` only from entries defined earlier.
    """
    t, streaming = spec.temporal, spec.streaming
    redis = streaming.redis
    values: dict[str, Any] = {
        "graph": spec.graph,
        "temporal_address": resolve_temporal_address(spec, config),
        "temporal_namespace": t.namespace,
        "temporal_task_queue": task_queue(name, spec),
        "token_streaming": streaming.tokens,
        "stream_maxlen": streaming.max_len,
        "stream_ttl_seconds": streaming.ttl_seconds,
        "health_port": spec.health_port,
        "shutdown_grace_seconds": spec.shutdown_grace_seconds,
    }
    # field -> secretKeyRef, for the variables that come from a Secret
    secret_refs: dict[str, dict[str, Any]] = {}
    if spec.payload_storage is not None:
        values.update(spec.payload_storage.worker_values())
        secret_refs.update(spec.payload_storage.secret_refs())
    if spec.history is not None:
        values.update(spec.history.worker_values())
    if t.api_key_secret_ref is not None:
        secret_refs["temporal_api_key"] = t.api_key_secret_ref.dump()
    if t.tls is not None:
        values["temporal_tls_cert"] = f"{TLS_MOUNT}/tls.crt"
        values["temporal_tls_key"] = f"{TLS_MOUNT}/tls.key"
        values["temporal_tls_ca"] = f"{TLS_MOUNT}/ca.crt"
    if redis.mode == "Managed":
        secret_refs["redis_password"] = {"name": redis_secret_name(name), "key": REDIS_PASSWORD_KEY}
        password = f"$({WorkerEnv.name('redis_password')})"
        values["redis_url"] = f"redis://:{password}@{redis_endpoint(name, namespace)}/0"
    elif redis.mode == "External":
        if redis.url is not None:
            values["redis_url"] = redis.url
        elif redis.url_secret_ref is not None:
            secret_refs["redis_url"] = redis.url_secret_ref.dump()
    plain = WorkerEnv.render(**values)
    env: list[dict[str, Any]] = []
    for var in WorkerEnv.variables():
        if var.field in secret_refs:
            env.append({"name": var.name, "valueFrom": {"secretKeyRef": secret_refs[var.field]}})
        elif var.name in plain:
            env.append({"name": var.name, "value": plain[var.name]})
    return env + (dump_list(spec.env) or [])


def shutdown_grace(spec: DeepAgentSpec) -> float:
    """The workers' shutdown grace: a plain ``spec.env`` value of its variable (``spec.env``
    comes last, so it wins in the container), else ``spec.shutdownGraceSeconds``, else the
    runtime's default. (A value from a Secret or ConfigMap cannot be known here.)"""
    name = WorkerEnv.name("shutdown_grace_seconds")
    for var in reversed(spec.env or []):
        if var.name == name and var.value_from is None:
            try:
                return max(0.0, float(var.value or ""))
            except ValueError:
                break  # the worker falls back to the default or refuses it
    if spec.shutdown_grace_seconds is not None:
        return float(spec.shutdown_grace_seconds)
    return float(WorkerEnv.shutdown_grace_seconds)


def runtime_volumes(spec: DeepAgentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) every runtime pod has: a writable /tmp, the Temporal client
    certificate when spec.temporal.tls is set."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.temporal.tls is not None:
        volumes.append(
            {"name": "temporal-tls", "secret": {"secretName": spec.temporal.tls.secret_name}}
        )
        mounts.append({"name": "temporal-tls", "mountPath": TLS_MOUNT, "readOnly": True})
    return volumes, mounts


def http_probes(ready_path: str, live_path: str, port: str) -> dict[str, Any]:
    """The readiness and liveness probes of a runtime container (HTTP GETs on ``port``)."""
    return {
        "readinessProbe": {
            "httpGet": {"path": ready_path, "port": port},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": live_path, "port": port},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def build_worker_deployment(
    body: Mapping[str, Any], spec: DeepAgentSpec, config: OperatorConfig, hash_: str
) -> dict[str, Any]:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    image = resolve_image(spec, config)
    sel = selector(name, "worker")
    pod_labels = {**(spec.pod_labels or {}), **labels(name, "worker")}
    pod_annotations = {**(spec.pod_annotations or {}), HASH_ANNOTATION: hash_}
    volumes, mounts = runtime_volumes(spec)
    port = spec.health_port
    container = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(WORKER_COMMAND),
        "env": worker_env(name, namespace, spec, config),
        "envFrom": dump_list(spec.env_from),
        "ports": [{"name": "health", "containerPort": port, "protocol": "TCP"}],
        **http_probes("/readyz", "/healthz", "health"),
        "resources": (spec.resources.dump() or None) if spec.resources else None,
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": mounts,
    }
    pod_spec = {
        "serviceAccountName": spec.service_account_name,
        # Workers do not talk to the Kubernetes API unless the user gives them an account.
        "automountServiceAccountToken": None if spec.service_account_name else False,
        "securityContext": copy.deepcopy(RUNTIME_POD_SECURITY),
        # The kubelet must not kill a worker that is still draining its running nodes.
        "terminationGracePeriodSeconds": termination_grace_seconds(shutdown_grace(spec)),
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": spec.node_selector or None,
        "tolerations": spec.tolerations or None,
        "affinity": spec.affinity or None,
        "imagePullSecrets": dump_list(spec.image_pull_secrets),
    }
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker_name(name),
            "labels": labels(name, "worker"),
            "annotations": {HASH_ANNOTATION: hash_},
        },
        "spec": {
            "replicas": None
            if spec.autoscaling
            else (spec.replicas if spec.replicas is not None else 1),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": sel},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
    return adopt(prune(dep), body)


def build_hpa(body: Mapping[str, Any], spec: DeepAgentSpec) -> dict[str, Any]:
    name = body["metadata"]["name"]
    a = spec.autoscaling
    assert a is not None
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": worker_name(name), "labels": labels(name, "worker")},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": worker_name(name),
            },
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": a.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }
    return adopt(hpa, body)
