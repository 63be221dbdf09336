"""Pure builders: a DeepAgent (spec + metadata) in, child manifests (plain dicts) out.

Nothing here talks to Kubernetes. Children are owned by the DeepAgent through
``kopf.adopt`` (ownerReferences with controller=true) so deleting the DeepAgent
garbage-collects them. One module per concern, so each stays small:

* :mod:`.common` - child names, labels, owner references;
* :mod:`.references` - referenced Secrets / ConfigMaps, operator defaults, the config hash;
* :mod:`.worker` - the worker Deployment, its environment and its HPA;
* :mod:`.redis` - Managed Redis (StatefulSet, Service, NetworkPolicy, password Secret).

Which children must *not* exist is a decision of :mod:`..plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import OperatorConfig
from ..model import DeepAgentSpec
from .common import (
    AGENT_LABEL,
    COMPONENT,
    HASH_ANNOTATION,
    MANAGED_BY,
    REDIS_CLIENT_LABEL,
    REDIS_PASSWORD_KEY,
    REDIS_PORT,
    labels,
    redis_endpoint,
    redis_name,
    redis_secret_name,
    selector,
    task_queue,
    worker_name,
)
from .redis import (
    build_redis_network_policy,
    build_redis_secret,
    build_redis_service,
    build_redis_statefulset,
    generate_password,
)
from .references import (
    Ref,
    check_references,
    config_hash,
    referenced_objects,
    resolve_image,
    resolve_temporal_address,
)
from .worker import TLS_MOUNT, WORKER_COMMAND, build_hpa, build_worker_deployment, worker_env

__all__ = [
    "AGENT_LABEL",
    "COMPONENT",
    "HASH_ANNOTATION",
    "MANAGED_BY",
    "REDIS_CLIENT_LABEL",
    "REDIS_PASSWORD_KEY",
    "REDIS_PORT",
    "TLS_MOUNT",
    "WORKER_COMMAND",
    "Ref",
    "build_children",
    "build_hpa",
    "build_redis_network_policy",
    "build_redis_secret",
    "build_redis_service",
    "build_redis_statefulset",
    "build_worker_deployment",
    "check_references",
    "config_hash",
    "generate_password",
    "labels",
    "redis_endpoint",
    "redis_name",
    "redis_secret_name",
    "referenced_objects",
    "resolve_image",
    "resolve_temporal_address",
    "selector",
    "task_queue",
    "worker_env",
    "worker_name",
]


def build_children(
    body: Mapping[str, Any], spec: DeepAgentSpec, config: OperatorConfig, hash_: str
) -> list[dict[str, Any]]:
    """Manifests of every child the spec asks for, in apply order (server-side applied
    whenever they drift). Raises :class:`~..model.SpecError` on semantic errors.

    The Redis password Secret is not among them: it is created once, never applied
    (:func:`build_redis_secret`).
    """
    children: list[dict[str, Any]] = []
    if spec.streaming.redis.mode == "Managed":
        children += [
            build_redis_service(body),
            build_redis_statefulset(body, spec, config),
            build_redis_network_policy(body),
        ]
    children.append(build_worker_deployment(body, spec, config, hash_))
    if spec.autoscaling is not None:
        children.append(build_hpa(body, spec))
    return children
