"""Managed Redis: StatefulSet, Service, NetworkPolicy and the password Secret."""

from __future__ import annotations

import base64
import secrets as _secrets
from collections.abc import Mapping
from typing import Any

from deepagent_temporal.contract import WorkerEnv

from ..config import OperatorConfig
from ..model import DeepAgentSpec
from .common import (
    CONTAINER_SECURITY,
    REDIS_CLIENT_LABEL,
    REDIS_PASSWORD_KEY,
    REDIS_PORT,
    adopt,
    labels,
    prune,
    redis_name,
    redis_secret_name,
    selector,
)

# Redis reads its password under the name the workers use for it (one Secret, one name).
PASSWORD_ENV = WorkerEnv.name("redis_password")


def build_redis_service(body: Mapping[str, Any]) -> dict[str, Any]:
    name = body["metadata"]["name"]
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": redis_name(name), "labels": labels(name, "redis")},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name, "redis"),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }
    return adopt(svc, body)


def build_redis_statefulset(
    body: Mapping[str, Any], spec: DeepAgentSpec, config: OperatorConfig
) -> dict[str, Any]:
    name = body["metadata"]["name"]
    redis = spec.streaming.redis
    persistent = redis.storage.type == "PersistentVolumeClaim"
    args = [
        "--port",
        str(REDIS_PORT),
        "--requirepass",
        f"$({PASSWORD_ENV})",
        "--dir",
        "/data",
        "--protected-mode",
        "no",
    ]
    args += ["--appendonly", "yes"] if persistent else ["--appendonly", "no", "--save", ""]
    container = {
        "name": "redis",
        "image": redis.image or config.redis_image,
        "command": ["redis-server"],
        "args": args,
        "env": [
            {
                "name": PASSWORD_ENV,
                "valueFrom": {
                    "secretKeyRef": {"name": redis_secret_name(name), "key": REDIS_PASSWORD_KEY}
                },
            }
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "livenessProbe": {
            "tcpSocket": {"port": "redis"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
        "resources": (redis.resources.dump() or None) if redis.resources else None,
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "runAsGroup": 999,
            "fsGroup": 999,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "nodeSelector": spec.node_selector or None,
        "tolerations": spec.tolerations or None,
    }
    sts: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": redis_name(name), "labels": labels(name, "redis")},
        "spec": {
            "serviceName": redis_name(name),
            "replicas": 1,
            "selector": {"matchLabels": selector(name, "redis")},
            "template": {
                "metadata": {"labels": labels(name, "redis")},
                "spec": pod_spec,
            },
        },
    }
    if persistent:
        pvc_spec = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(redis.storage.size)}},
            "storageClassName": redis.storage.storage_class_name,
        }
        sts["spec"]["volumeClaimTemplates"] = [
            {"metadata": {"name": "data", "labels": labels(name, "redis")}, "spec": pvc_spec}
        ]
    else:
        pod_spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    return adopt(prune(sts), body)


def build_redis_network_policy(body: Mapping[str, Any]) -> dict[str, Any]:
    """Only this agent's workers and pods labelled ``deepagent.dev/redis-client=<name>``."""
    name = body["metadata"]["name"]
    np = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": redis_name(name), "labels": labels(name, "redis")},
        "spec": {
            "podSelector": {"matchLabels": selector(name, "redis")},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": selector(name, "worker")}},
                        {"podSelector": {"matchLabels": {REDIS_CLIENT_LABEL: name}}},
                    ],
                    "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                }
            ],
        },
    }
    return adopt(np, body)


def build_redis_secret(body: Mapping[str, Any], password: str | None = None) -> dict[str, Any]:
    """Created once; the operator never rewrites it while it exists."""
    name = body["metadata"]["name"]
    password = password or generate_password()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": redis_secret_name(name), "labels": labels(name, "redis")},
        "data": {REDIS_PASSWORD_KEY: base64.b64encode(password.encode()).decode()},
    }
    return adopt(secret, body)


def generate_password() -> str:
    # Hex only: safe inside a redis:// URL without escaping.
    return _secrets.token_hex(24)
