"""Pure builders: a DeepAgent (spec + metadata) in, child manifests (plain dicts) out.

Nothing here talks to Kubernetes. Children are owned by the DeepAgent through
``kopf.adopt`` (ownerReferences with controller=true) so deleting the DeepAgent
garbage-collects them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets as _secrets
from collections.abc import Mapping
from typing import Any

import kopf

from . import API_VERSION, KIND, MANAGER
from .config import OperatorConfig
from .model import DeepAgentSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
AGENT_LABEL = "deepagent.dev/agent"
COMPONENT = "app.kubernetes.io/component"
REDIS_CLIENT_LABEL = "deepagent.dev/redis-client"
HASH_ANNOTATION = "deepagent.dev/config-hash"
REDIS_PORT = 6379
REDIS_PASSWORD_KEY = "password"
TLS_MOUNT = "/etc/deepagent/temporal-tls"
WORKER_COMMAND = ["deepagent-temporal", "worker"]


class SpecError(Exception):
    """A semantic problem the API server cannot see (e.g. a missing Secret).

    ``field`` names the offending spec field, ``fix`` tells the user what to do.
    """

    def __init__(self, field: str, message: str, fix: str, reason: str = "InvalidSpec"):
        super().__init__(f"{field}: {message}; {fix}")
        self.field = field
        self.message = message
        self.fix = fix
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.message}; {self.fix}"


@dataclasses.dataclass(frozen=True)
class Ref:
    """A Secret or ConfigMap the workers read; its data is part of the config hash."""

    kind: str  # "Secret" | "ConfigMap"
    name: str
    field: str  # spec path that references it, for error messages
    optional: bool = False
    keys: tuple[str, ...] = ()  # keys that must exist (empty = whole object)


def worker_name(name: str) -> str:
    return f"{name}-worker"


def redis_name(name: str) -> str:
    return f"{name}-redis"


def redis_secret_name(name: str) -> str:
    return f"{name}-redis-auth"


def labels(name: str, component: str | None = None) -> dict[str, str]:
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
    return {AGENT_LABEL: name, COMPONENT: component}


def task_queue(name: str, spec: DeepAgentSpec) -> str:
    return spec.task_queue or name


def redis_endpoint(name: str, namespace: str) -> str:
    return f"{redis_name(name)}.{namespace}.svc:{REDIS_PORT}"


def referenced_objects(spec: DeepAgentSpec) -> list[Ref]:
    """Every user Secret / ConfigMap the worker pods consume, with the field naming it."""
    refs: list[Ref] = []
    for i, src in enumerate(spec.env_from or []):
        if src.secret_ref is not None:
            refs.append(
                Ref(
                    "Secret",
                    src.secret_ref.name,
                    f"spec.envFrom[{i}].secretRef.name",
                    bool(src.secret_ref.optional),
                )
            )
        if src.config_map_ref is not None:
            refs.append(
                Ref(
                    "ConfigMap",
                    src.config_map_ref.name,
                    f"spec.envFrom[{i}].configMapRef.name",
                    bool(src.config_map_ref.optional),
                )
            )
    for i, var in enumerate(spec.env or []):
        vf = var.value_from
        if vf is None:
            continue
        if vf.secret_key_ref is not None:
            r = vf.secret_key_ref
            refs.append(
                Ref(
                    "Secret",
                    r.name,
                    f"spec.env[{i}].valueFrom.secretKeyRef",
                    bool(r.optional),
                    (r.key,),
                )
            )
        if vf.config_map_key_ref is not None:
            r2 = vf.config_map_key_ref
            refs.append(
                Ref(
                    "ConfigMap",
                    r2.name,
                    f"spec.env[{i}].valueFrom.configMapKeyRef",
                    bool(r2.optional),
                    (r2.key,),
                )
            )
    t = spec.temporal
    if t.api_key_secret_ref is not None:
        r = t.api_key_secret_ref
        refs.append(
            Ref("Secret", r.name, "spec.temporal.apiKeySecretRef", bool(r.optional), (r.key,))
        )
    if t.tls is not None:
        refs.append(
            Ref(
                "Secret",
                t.tls.secret_name,
                "spec.temporal.tls.secretName",
                False,
                ("tls.crt", "tls.key"),
            )
        )
    redis = spec.streaming.redis
    if redis.url_secret_ref is not None:
        r = redis.url_secret_ref
        refs.append(
            Ref("Secret", r.name, "spec.streaming.redis.urlSecretRef", bool(r.optional), (r.key,))
        )
    return refs


def check_references(spec: DeepAgentSpec, found: Mapping[tuple[str, str], Mapping | None]) -> None:
    """Raise :class:`SpecError` for a required referenced object (or key) that is missing.

    ``found`` maps (kind, name) to the object's ``data`` (None when it does not exist).
    """
    for ref in referenced_objects(spec):
        data = found.get((ref.kind, ref.name))
        if data is None:
            if ref.optional:
                continue
            raise SpecError(
                ref.field,
                f'{ref.kind} "{ref.name}" not found',
                f"create the {ref.kind} in the DeepAgent's namespace or fix {ref.field}",
                reason=f"{ref.kind}NotFound",
            )
        for key in ref.keys:
            if key not in data and not ref.optional:
                raise SpecError(
                    ref.field,
                    f'{ref.kind} "{ref.name}" has no key "{key}"',
                    f"add the key to the {ref.kind} or fix {ref.field}",
                    reason=f"{ref.kind}KeyNotFound",
                )


def resolve_image(spec: DeepAgentSpec, config: OperatorConfig) -> str:
    image = spec.image or config.default_image
    if not image:
        raise SpecError(
            "spec.image",
            "no worker image: spec.image is unset and the operator has no default runtime image",
            "set spec.image, or install the chart with --set runtimeImage.repository=... "
            "(operator flag --default-image)",
            reason="ImageNotSet",
        )
    return image


def resolve_temporal_address(spec: DeepAgentSpec, config: OperatorConfig) -> str:
    address = spec.temporal.address or config.default_temporal_address
    if not address:
        raise SpecError(
            "spec.temporal.address",
            "no Temporal address: spec.temporal.address is unset and the operator has no default",
            "set spec.temporal.address (host:port), or install the chart with "
            "--set temporal.defaultAddress=host:port",
            reason="TemporalAddressNotSet",
        )
    return address


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def config_hash(
    spec: DeepAgentSpec,
    config: OperatorConfig,
    ref_data: Mapping[tuple[str, str], Mapping | None],
) -> str:
    """Hash of everything the worker pods see: the spec, defaults, referenced data.

    Secret values are hashed, never stored; a changed Secret changes the hash and so
    the pod template annotation, which rolls the Deployment.
    """
    refs = {
        f"{kind}/{name}": (_digest(dict(data)) if data is not None else None)
        for (kind, name), data in sorted(ref_data.items())
    }
    return _digest(
        {
            "spec": spec.dump(),
            "image": spec.image or config.default_image,
            "temporal": spec.temporal.address or config.default_temporal_address,
            "refs": refs,
        }
    )[:16]


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


def _adopt(obj: dict[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    kopf.adopt(obj, owner=_owner(body))  # type: ignore[arg-type]
    return obj


def _prune(obj: Any) -> Any:
    """Drop keys whose value is None (unset optional fields)."""
    if isinstance(obj, dict):
        return {k: _prune(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_prune(v) for v in obj]
    return obj


def _dump_list(items: list[Any] | None) -> list[dict[str, Any]] | None:
    out = [i.dump() if hasattr(i, "dump") else dict(i) for i in (items or [])]
    return out or None


def worker_env(
    name: str, namespace: str, spec: DeepAgentSpec, config: OperatorConfig
) -> list[dict[str, Any]]:
    """The worker container's environment, following the contract in ARCHITECTURE.md."""
    t = spec.temporal
    s = spec.streaming
    env: list[dict[str, Any]] = [
        {"name": "DEEPAGENT_GRAPH", "value": spec.graph},
        {"name": "TEMPORAL_ADDRESS", "value": resolve_temporal_address(spec, config)},
        {"name": "TEMPORAL_NAMESPACE", "value": t.namespace},
        {"name": "TEMPORAL_TASK_QUEUE", "value": task_queue(name, spec)},
    ]
    if t.api_key_secret_ref is not None:
        env.append(
            {"name": "TEMPORAL_API_KEY", "valueFrom": {"secretKeyRef": t.api_key_secret_ref.dump()}}
        )
    if t.tls is not None:
        env += [
            {"name": "TEMPORAL_TLS_CERT", "value": f"{TLS_MOUNT}/tls.crt"},
            {"name": "TEMPORAL_TLS_KEY", "value": f"{TLS_MOUNT}/tls.key"},
            {"name": "TEMPORAL_TLS_CA", "value": f"{TLS_MOUNT}/ca.crt"},
        ]
    env.append({"name": "DEEPAGENT_TOKEN_STREAMING", "value": "true" if s.tokens else "false"})
    redis = s.redis
    if redis.mode == "Managed":
        env += [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {"name": redis_secret_name(name), "key": REDIS_PASSWORD_KEY}
                },
            },
            {
                "name": "REDIS_URL",
                # Kubernetes expands $(REDIS_PASSWORD) from the variable defined above.
                "value": f"redis://:$(REDIS_PASSWORD)@{redis_endpoint(name, namespace)}/0",
            },
        ]
    elif redis.mode == "External":
        if redis.url is not None:
            env.append({"name": "REDIS_URL", "value": redis.url})
        elif redis.url_secret_ref is not None:
            env.append(
                {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": redis.url_secret_ref.dump()}}
            )
    env += [
        {"name": "DEEPAGENT_STREAM_MAXLEN", "value": str(s.max_len)},
        {"name": "DEEPAGENT_STREAM_TTL_SECONDS", "value": str(s.ttl_seconds)},
        {"name": "DEEPAGENT_HEALTH_PORT", "value": str(spec.health_port)},
    ]
    env += _dump_list(spec.env) or []
    return env


_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
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
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.temporal.tls is not None:
        volumes.append(
            {"name": "temporal-tls", "secret": {"secretName": spec.temporal.tls.secret_name}}
        )
        mounts.append({"name": "temporal-tls", "mountPath": TLS_MOUNT, "readOnly": True})
    port = spec.health_port
    container = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(WORKER_COMMAND),
        "env": worker_env(name, namespace, spec, config),
        "envFrom": _dump_list(spec.env_from),
        "ports": [{"name": "health", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "health"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": (spec.resources.dump() or None) if spec.resources else None,
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": mounts,
    }
    pod_spec = {
        "serviceAccountName": spec.service_account_name,
        # Workers do not talk to the Kubernetes API unless the user gives them an account.
        "automountServiceAccountToken": None if spec.service_account_name else False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": spec.node_selector or None,
        "tolerations": spec.tolerations or None,
        "affinity": spec.affinity or None,
        "imagePullSecrets": _dump_list(spec.image_pull_secrets),
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
    return _adopt(_prune(dep), body)


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
    return _adopt(svc, body)


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
        "$(REDIS_PASSWORD)",
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
                "name": "REDIS_PASSWORD",
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
        "securityContext": dict(_CONTAINER_SECURITY),
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
    return _adopt(_prune(sts), body)


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
    return _adopt(np, body)


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
    return _adopt(secret, body)


def generate_password() -> str:
    # Hex only: safe inside a redis:// URL without escaping.
    return _secrets.token_hex(24)


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
    return _adopt(hpa, body)


@dataclasses.dataclass
class Desired:
    """What should exist (``apply``) and what should not (``absent``: (kind, name))."""

    apply: list[dict[str, Any]]
    absent: list[tuple[str, str]]
    redis_secret: dict[str, Any] | None  # create-only
    config_hash: str


def build_children(
    body: Mapping[str, Any], spec: DeepAgentSpec, config: OperatorConfig, hash_: str
) -> Desired:
    """All children of one DeepAgent. Raises :class:`SpecError` on semantic errors."""
    name = body["metadata"]["name"]
    apply: list[dict[str, Any]] = []
    absent: list[tuple[str, str]] = []
    secret = None
    if spec.streaming.redis.mode == "Managed":
        secret = build_redis_secret(body, password="placeholder")
        apply += [
            build_redis_service(body),
            build_redis_statefulset(body, spec, config),
            build_redis_network_policy(body),
        ]
    else:
        # The auth Secret is kept on purpose: switching back to Managed reuses the password.
        absent += [
            ("StatefulSet", redis_name(name)),
            ("Service", redis_name(name)),
            ("NetworkPolicy", redis_name(name)),
        ]
    apply.append(build_worker_deployment(body, spec, config, hash_))
    if spec.autoscaling is not None:
        apply.append(build_hpa(body, spec))
    else:
        absent.append(("HorizontalPodAutoscaler", worker_name(name)))
    return Desired(apply=apply, absent=absent, redis_secret=secret, config_hash=hash_)
