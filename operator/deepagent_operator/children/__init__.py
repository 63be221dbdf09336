"""Pure builders: a DeepAgent (spec + metadata) in, child manifests (plain dicts) out.

Nothing here talks to Kubernetes. Children are owned by the DeepAgent through
``kopf.adopt`` (ownerReferences with controller=true) so deleting the DeepAgent
garbage-collects them. One module per concern, so each stays small:

* :mod:`.common` - child names, labels, owner references;
* :mod:`.references` - referenced Secrets / ConfigMaps, operator defaults, the config hash;
* :mod:`.worker` - the worker Deployment, its environment and its HPA;
* :mod:`.redis` - Managed Redis (StatefulSet, Service, NetworkPolicy, password Secret);
* :mod:`.gateway` - the gateway (Deployment, Service, generated API key Secret).

Which children must *not* exist is a decision of :mod:`..plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import OperatorConfig
from ..gateway_spec import gateway_enabled
from ..model import DeepAgentSpec
from .common import (
    AGENT_LABEL,
    COMPONENT,
    HASH_ANNOTATION,
    MANAGED_BY,
    REDIS_AUTH_HASH_ANNOTATION,
    REDIS_CLIENT_LABEL,
    REDIS_CONF_KEY,
    REDIS_PASSWORD_KEY,
    REDIS_PORT,
    gateway_name,
    gateway_secret_name,
    labels,
    redis_endpoint,
    redis_name,
    redis_secret_name,
    selector,
    task_queue,
    worker_name,
)
from .gateway import (
    GATEWAY_API_KEY,
    GATEWAY_COMMAND,
    GATEWAY_KEYS_MOUNT,
    build_gateway_deployment,
    build_gateway_secret,
    build_gateway_service,
    gateway_config_hash,
    gateway_endpoint,
    gateway_env,
    gateway_key_ref,
)
from .redis import (
    REDIS_CONF_PATH,
    build_redis_network_policy,
    build_redis_secret,
    build_redis_service,
    build_redis_statefulset,
    generate_password,
    redis_auth_hash,
    redis_conf,
    redis_conf_patch,
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
    "GATEWAY_API_KEY",
    "GATEWAY_COMMAND",
    "GATEWAY_KEYS_MOUNT",
    "HASH_ANNOTATION",
    "MANAGED_BY",
    "REDIS_AUTH_HASH_ANNOTATION",
    "REDIS_CLIENT_LABEL",
    "REDIS_CONF_KEY",
    "REDIS_CONF_PATH",
    "REDIS_PASSWORD_KEY",
    "REDIS_PORT",
    "TLS_MOUNT",
    "WORKER_COMMAND",
    "Ref",
    "build_children",
    "build_gateway_deployment",
    "build_gateway_secret",
    "build_gateway_service",
    "build_hpa",
    "build_redis_network_policy",
    "build_redis_secret",
    "build_redis_service",
    "build_redis_statefulset",
    "build_worker_deployment",
    "check_references",
    "config_hash",
    "gateway_config_hash",
    "gateway_endpoint",
    "gateway_env",
    "gateway_key_ref",
    "gateway_name",
    "gateway_secret_name",
    "generate_password",
    "labels",
    "redis_auth_hash",
    "redis_conf",
    "redis_conf_patch",
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
    body: Mapping[str, Any],
    spec: DeepAgentSpec,
    config: OperatorConfig,
    hash_: str,
    redis_auth: Mapping[str, str] | None = None,
    gateway_hash: str | None = None,
) -> list[dict[str, Any]]:
    """Manifests of every child the spec asks for, in apply order (server-side applied
    whenever they drift). Raises :class:`~..model.SpecError` on semantic errors.

    The Redis password Secret is not among them: it is created once, never applied
    (:func:`build_redis_secret`); ``redis_auth`` is its data (Managed Redis), hashed into
    the Redis pod template so that a new password rolls Redis. Nor is the gateway's API key
    Secret; ``gateway_hash`` (:func:`gateway_config_hash`) rolls the gateway.
    """
    children: list[dict[str, Any]] = []
    if spec.streaming.redis.mode == "Managed":
        children += [
            build_redis_service(body),
            build_redis_statefulset(body, spec, config, redis_auth_hash(redis_auth)),
            build_redis_network_policy(body, config),
        ]
    children.append(build_worker_deployment(body, spec, config, hash_))
    if spec.autoscaling is not None:
        children.append(build_hpa(body, spec))
    if gateway_enabled(spec):
        children += [
            build_gateway_service(body, spec),
            build_gateway_deployment(body, spec, config, gateway_hash or hash_),
        ]
    return children
