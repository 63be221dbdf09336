"""Managed Redis: StatefulSet, Service, NetworkPolicy and the password Secret."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets as _secrets
from collections.abc import Mapping
from typing import Any

from ..config import OperatorConfig
from ..model import DeepAgentSpec
from .common import (
    CONTAINER_SECURITY,
    REDIS_AUTH_HASH_ANNOTATION,
    REDIS_CLIENT_LABEL,
    REDIS_CONF_KEY,
    REDIS_PASSWORD_KEY,
    REDIS_PORT,
    adopt,
    labels,
    prune,
    redis_name,
    redis_secret_name,
    selector,
)

#: Where the Redis pod mounts its config file (the `redis.conf` key of the auth Secret).
REDIS_CONF_DIR = "/etc/redis"
REDIS_CONF_PATH = f"{REDIS_CONF_DIR}/{REDIS_CONF_KEY}"


def redis_conf(password: str) -> str:
    """The Redis config file of the auth Secret: only the password (the rest is in argv),
    quoted the way Redis reads config arguments."""
    quoted = "".join(
        "\\" + c if c in '"\\' else c if c.isprintable() else f"\\x{ord(c):02x}" for c in password
    )
    return f'requirepass "{quoted}"\n'


def redis_auth_hash(data: Mapping[str, str] | None) -> str:
    """Hash of the auth Secret's data, for the Redis pod template (never the data itself)."""
    raw = json.dumps(dict(data or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


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
    body: Mapping[str, Any], spec: DeepAgentSpec, config: OperatorConfig, auth_hash: str
) -> dict[str, Any]:
    """Redis reads its password from the config file mounted from the auth Secret (not from
    argv or env); ``auth_hash`` (:func:`redis_auth_hash`) rolls the pod when it changes."""
    name = body["metadata"]["name"]
    redis = spec.streaming.redis
    persistent = redis.storage.type == "PersistentVolumeClaim"
    args = [
        "--port",
        str(REDIS_PORT),
        "--dir",
        "/data",
        "--protected-mode",
        "no",
    ]
    args += ["--appendonly", "yes"] if persistent else ["--appendonly", "no", "--save", ""]
    container = {
        "name": "redis",
        "image": redis.image or config.redis_image,
        "command": ["redis-server", REDIS_CONF_PATH],
        "args": args,
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "livenessProbe": {
            "tcpSocket": {"port": "redis"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
        "resources": (redis.resources.dump() or None) if redis.resources else None,
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "auth", "mountPath": REDIS_CONF_DIR, "readOnly": True},
        ],
    }
    auth_volume = {
        "name": "auth",
        "secret": {
            "secretName": redis_secret_name(name),
            "items": [{"key": REDIS_CONF_KEY, "path": REDIS_CONF_KEY}],
            "defaultMode": 0o440,
        },
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
        "volumes": [auth_volume],
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
                "metadata": {
                    "labels": labels(name, "redis"),
                    "annotations": {REDIS_AUTH_HASH_ANNOTATION: auth_hash},
                },
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
        pod_spec["volumes"].insert(0, {"name": "data", "emptyDir": {}})
    return adopt(prune(sts), body)


def build_redis_network_policy(body: Mapping[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """Only this agent's workers, pods labelled ``deepagent.dev/redis-client=<name>`` and, when
    it knows where it runs, the operator (its AUTH + PING readiness check)."""
    name = body["metadata"]["name"]
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": selector(name, "worker")}},
        {"podSelector": {"matchLabels": {REDIS_CLIENT_LABEL: name}}},
    ]
    if config.operator_namespace and config.operator_pod_labels:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": config.operator_namespace}
                },
                "podSelector": {"matchLabels": dict(config.operator_pod_labels)},
            }
        )
    np = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": redis_name(name), "labels": labels(name, "redis")},
        "spec": {
            "podSelector": {"matchLabels": selector(name, "redis")},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": peers,
                    "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                }
            ],
        },
    }
    return adopt(np, body)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def build_redis_secret(body: Mapping[str, Any], password: str | None = None) -> dict[str, Any]:
    """Created once with a fresh password; the operator never changes the password (deleting
    the Secret rotates it) and only keeps `redis.conf` in step with it."""
    name = body["metadata"]["name"]
    password = password or generate_password()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": redis_secret_name(name), "labels": labels(name, "redis")},
        "data": {REDIS_PASSWORD_KEY: _b64(password), REDIS_CONF_KEY: _b64(redis_conf(password))},
    }
    return adopt(secret, body)


def redis_conf_patch(data: Mapping[str, str]) -> dict[str, Any] | None:
    """The merge patch that brings the Secret's `redis.conf` in step with its `password`
    (Secrets of older operators have none; a user may set a new password), or None.

    ``data`` is the Secret's base64 data and must hold a password."""
    password = base64.b64decode(data[REDIS_PASSWORD_KEY]).decode()
    want = _b64(redis_conf(password))
    if data.get(REDIS_CONF_KEY) == want:
        return None
    return {"data": {REDIS_CONF_KEY: want}}


def generate_password() -> str:
    # Hex only: safe inside a redis:// URL without escaping.
    return _secrets.token_hex(24)
