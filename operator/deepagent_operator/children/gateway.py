"""The gateway: ``deepagent-temporal serve`` next to the workers (``spec.gateway``).

* Deployment ``<name>-gateway``: the runtime image (as the workers), the workers' environment
  (``worker_env``: Temporal, task queue, Redis, payload storage, ``spec.env``; ``spec.envFrom``
  unless ``spec.gateway.workerEnvFrom`` is false) plus the gateway's own variables, the API
  key Secret mounted read-only as its keys file, probes on ``/ok``, the Redis client label
  (the Managed Redis NetworkPolicy admits it);
* Service ``<name>-gateway`` (``spec.gateway.service``), targeting the pods' gateway port;
* Secret ``<name>-gateway-api-key``, created once with a random key when
  ``spec.gateway.apiKeySecretRef`` is unset (never applied, so never rotated by the operator).
"""

from __future__ import annotations

import base64
import copy
import secrets as _secrets
from collections.abc import Mapping
from typing import Any

from deepagent_temporal.contract import WorkerEnv

from ..config import OperatorConfig
from ..gateway_spec import GATEWAY_PORT, GatewaySpec
from ..model import DeepAgentSpec
from .common import (
    CONTAINER_SECURITY,
    HASH_ANNOTATION,
    REDIS_CLIENT_LABEL,
    RUNTIME_POD_SECURITY,
    adopt,
    dump_list,
    gateway_name,
    gateway_secret_name,
    labels,
    prune,
    selector,
)
from .references import config_hash, resolve_image
from .worker import http_probes, runtime_volumes, worker_env

GATEWAY_COMMAND = ["deepagent-temporal", "serve"]
#: Where the gateway pods mount the API key Secret; the keys file is ``<mount>/<key>``.
GATEWAY_KEYS_MOUNT = "/etc/deepagent/gateway-api-keys"
#: Key of the generated Secret ``<name>-gateway-api-key``.
GATEWAY_API_KEY = "api-key"
#: The address the gateway binds in a pod: all interfaces.
GATEWAY_HOST = "0.0.0.0"


def gateway_of(spec: DeepAgentSpec) -> GatewaySpec:
    gateway = spec.gateway
    assert gateway is not None and gateway.enabled, "the gateway is not enabled"
    return gateway


def gateway_key_ref(name: str, spec: DeepAgentSpec | GatewaySpec) -> tuple[str, str]:
    """(Secret name, key) of the gateway's API key(s): the user's, else the generated one."""
    gateway = spec if isinstance(spec, GatewaySpec) else gateway_of(spec)
    ref = gateway.api_key_secret_ref
    if ref is not None:
        return ref.name, ref.key
    return gateway_secret_name(name), GATEWAY_API_KEY


def gateway_env(
    name: str, namespace: str, spec: DeepAgentSpec, config: OperatorConfig
) -> list[dict[str, Any]]:
    """Everything a worker gets to reach runs (``worker_env``), then the gateway's variables
    (they replace a ``spec.env`` entry of the same name: one entry per name)."""
    _, key = gateway_key_ref(name, spec)
    own = WorkerEnv.render(
        gateway_port=GATEWAY_PORT,
        gateway_host=GATEWAY_HOST,
        gateway_api_keys_file=f"{GATEWAY_KEYS_MOUNT}/{key}",
    )
    env = [e for e in worker_env(name, namespace, spec, config) if e["name"] not in own]
    return env + [{"name": var, "value": value} for var, value in own.items()]


def gateway_config_hash(
    spec: DeepAgentSpec,
    config: OperatorConfig,
    ref_data: Mapping[tuple[str, str], Mapping | None],
    key: tuple[str, Mapping | None],
) -> str:
    """Hash of what the gateway pods read beyond their template: the workers' configuration
    (scaling left out: scaling the workers does not roll the gateway) and the data of the
    API key Secret (``key``: its name and data)."""
    unscaled = spec.model_copy(update={"replicas": None, "autoscaling": None})
    return config_hash(unscaled, config, {**ref_data, ("Secret", key[0]): key[1]})


def build_gateway_deployment(
    body: Mapping[str, Any], spec: DeepAgentSpec, config: OperatorConfig, hash_: str
) -> dict[str, Any]:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    gateway = gateway_of(spec)
    secret_name, key = gateway_key_ref(name, spec)
    pod_labels = {**labels(name, "gateway"), REDIS_CLIENT_LABEL: name}
    volumes, mounts = runtime_volumes(spec)
    volumes.insert(
        1,
        {
            "name": "api-keys",
            "secret": {
                "secretName": secret_name,
                "items": [{"key": key, "path": key}],
                "defaultMode": 0o440,
            },
        },
    )
    mounts.insert(1, {"name": "api-keys", "mountPath": GATEWAY_KEYS_MOUNT, "readOnly": True})
    container = {
        "name": "gateway",
        "image": resolve_image(spec, config),
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(GATEWAY_COMMAND),
        "env": gateway_env(name, namespace, spec, config),
        "envFrom": dump_list(spec.env_from) if gateway.worker_env_from else None,
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        **http_probes("/ok", "/ok", "http"),
        "resources": (gateway.resources.dump() or None) if gateway.resources else None,
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": mounts,
    }
    pod_spec = {
        # The workers' account: the gateway reads the same runs (e.g. cloud IAM for payloads).
        "serviceAccountName": spec.service_account_name,
        "automountServiceAccountToken": None if spec.service_account_name else False,
        "securityContext": copy.deepcopy(RUNTIME_POD_SECURITY),
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": spec.node_selector or None,
        "tolerations": spec.tolerations or None,
        "imagePullSecrets": dump_list(spec.image_pull_secrets),
    }
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": gateway_name(name),
            "labels": labels(name, "gateway"),
            "annotations": {HASH_ANNOTATION: hash_},
        },
        "spec": {
            "replicas": gateway.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(name, "gateway")},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {HASH_ANNOTATION: hash_}},
                "spec": pod_spec,
            },
        },
    }
    return adopt(prune(dep), body)


def build_gateway_service(body: Mapping[str, Any], spec: DeepAgentSpec) -> dict[str, Any]:
    name = body["metadata"]["name"]
    service = gateway_of(spec).service
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": gateway_name(name),
            "labels": labels(name, "gateway"),
            "annotations": dict(service.annotations) if service.annotations else None,
        },
        "spec": {
            "type": service.type,
            "selector": selector(name, "gateway"),
            "ports": [
                {"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
    return adopt(prune(svc), body)


def generate_api_key() -> str:
    # URL-safe: sent as it is in the x-api-key header.
    return _secrets.token_urlsafe(32)


def build_gateway_secret(body: Mapping[str, Any], api_key: str | None = None) -> dict[str, Any]:
    """Created once with a random key; the operator never changes it (deleting the Secret
    makes a new key and rolls the gateway)."""
    name = body["metadata"]["name"]
    key = api_key or generate_api_key()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": gateway_secret_name(name), "labels": labels(name, "gateway")},
        "data": {GATEWAY_API_KEY: base64.b64encode(key.encode()).decode()},
    }
    return adopt(secret, body)


def gateway_endpoint(name: str, namespace: str, gateway: GatewaySpec) -> str:
    """The in-cluster URL of the gateway Service."""
    return f"http://{gateway_name(name)}.{namespace}.svc:{gateway.service.port}"
