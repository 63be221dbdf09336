"""Names, labels and manifest helpers shared by the child builders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from .. import API_VERSION, KIND, MANAGER
from ..model import DeepAgentSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
AGENT_LABEL = "deepagent.dev/agent"
COMPONENT = "app.kubernetes.io/component"
REDIS_CLIENT_LABEL = "deepagent.dev/redis-client"
HASH_ANNOTATION = "deepagent.dev/config-hash"
#: On the Redis pod template: hash of the password Secret's data (a new password rolls Redis).
REDIS_AUTH_HASH_ANNOTATION = "deepagent.dev/redis-auth-hash"
REDIS_PORT = 6379
#: Keys of the `<name>-redis-auth` Secret: the password (the workers' REDIS_PASSWORD) and the
#: Redis config file that sets it (mounted into the Redis pod; never in its argv).
REDIS_PASSWORD_KEY = "password"
REDIS_CONF_KEY = "redis.conf"

CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
#: Pod securityContext of the runtime image's pods (workers, gateway): its user 10001.
RUNTIME_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def worker_name(name: str) -> str:
    return f"{name}-worker"


def redis_name(name: str) -> str:
    return f"{name}-redis"


def redis_secret_name(name: str) -> str:
    return f"{name}-redis-auth"


def gateway_name(name: str) -> str:
    """Deployment and Service of the gateway."""
    return f"{name}-gateway"


def gateway_secret_name(name: str) -> str:
    """The generated API key Secret of the gateway (when spec.gateway.apiKeySecretRef is unset)."""
    return f"{name}-gateway-api-key"


def labels(name: str, component: str | None = None) -> dict[str, str]:
    """Labels of every child; the managed-by label is what the operator's watches select."""
    out = {
        "app.kubernetes.io/name": "deepagent",
        "app.kubernetes.io/instance": name,
        MANAGED_BY: MANAGER,
        AGENT_LABEL: name,
    }
    if component:
        out[COMPONENT] = component
    return out


def selector(name: str, component: str) -> dict[str, str]:
    """Pod selector of one component (``worker`` or ``redis``) of one agent."""
    return {AGENT_LABEL: name, COMPONENT: component}


def task_queue(name: str, spec: DeepAgentSpec) -> str:
    """The Temporal task queue of the workers: ``spec.taskQueue``, else the agent's name."""
    return spec.task_queue or name


def redis_endpoint(name: str, namespace: str) -> str:
    """``host:port`` of the Managed Redis Service."""
    return f"{redis_name(name)}.{namespace}.svc:{REDIS_PORT}"


def _owner(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", KIND),
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "labels": {},
        },
    }


def adopt(obj: dict[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """Make the DeepAgent ``body`` the controller owner of ``obj`` (and set its namespace)."""
    kopf.adopt(obj, owner=_owner(body))  # type: ignore[arg-type]
    return obj


def prune(obj: Any) -> Any:
    """Drop keys whose value is None (unset optional fields)."""
    if isinstance(obj, dict):
        return {k: prune(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [prune(v) for v in obj]
    return obj


def dump_list(items: list[Any] | None) -> list[dict[str, Any]] | None:
    """Models (or dicts) as a list of camelCase dicts; None when empty."""
    out = [i.dump() if hasattr(i, "dump") else dict(i) for i in (items or [])]
    return out or None
