"""The DeepAgent model: ``spec`` and ``status``, single source of truth for the CRD and the operator.

``crds/deepagent.yaml`` is generated from these classes (see :mod:`.crd`), so every
type, enum, default, bound and pattern here is enforced by the Kubernetes API server too.
Cross-field rules are written twice, once as CEL (``x-kubernetes-validations``, checked by
the API server) and once as a pydantic validator (checked by the operator, e.g. for
objects created before the CRD was upgraded); the unit tests keep the two in agreement.
The status the operator writes is built as a :class:`DeepAgentStatus` (see :mod:`.status`).
Descriptions name the worker variables through ``WorkerEnv`` (the runtime's contract).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from deepagent_temporal.contract import WorkerEnv

from . import worker_spec as ws
from .corev1 import (
    NAME_PATTERN,
    EnvFromSource,
    EnvVar,
    KubeModel,
    LocalObjectReference,
    NameStr,
    Quantity,
    ResourceRequirements,
    SecretKeySelector,
    as_quantity,
    check_string_map,
    name_field,
    quantity_field,
    string_map_field,
)
from .gateway_spec import GatewaySpec, GatewayStatus, check_gateway_name, gateway_field

# `package.module:attribute` (attribute may be dotted, e.g. `pkg.mod:Factory.build`).
GRAPH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
# `host:port` with a DNS name, IPv4 address or bracketed IPv6 address; port 1-65535.
ADDRESS_PATTERN = (
    r"^([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
)
REDIS_URL_PATTERN = r"^rediss?://[^\s]+$"
TASK_QUEUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9._/]*[A-Za-z0-9])?$"

_env = WorkerEnv.name  # the worker variable a field sets, for its description

# Longest DeepAgent name: `<name>-redis-<controller-revision-hash>` must stay a valid label.
MAX_NAME_LENGTH = 40
# With Managed Redis the name starts the Service name `<name>-redis`: a DNS-1035 label.
DNS1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
MANAGED_REDIS_NAME_MESSAGE = (
    "metadata.name: with spec.streaming.redis.mode Managed the name must be a DNS-1035 label "
    "(lowercase letters, digits and '-', starting with a letter, no dots): "
    "the Redis Service <name>-redis is named after it"
)


def check_name(name: str, spec: DeepAgentSpec) -> None:
    """Raise :class:`SpecError` when ``name`` cannot name this spec's children (the mirror of
    the CRD's rule on ``metadata.name``, for objects created before that rule existed)."""
    if spec.streaming.redis.mode == "Managed" and not re.match(DNS1035_LABEL_PATTERN, name):
        raise SpecError(
            "metadata.name",
            MANAGED_REDIS_NAME_MESSAGE.removeprefix("metadata.name: "),
            "recreate the DeepAgent under such a name, or use spec.streaming.redis.mode "
            "External or Disabled",
            reason="InvalidName",
        )
    check_gateway_name(name, spec)


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


class TemporalTLS(KubeModel):
    secret_name: NameStr = name_field(
        "Secret with the client certificate (`tls.crt`), key (`tls.key`) and optionally the "
        "server CA (`ca.crt`); mounted read-only and passed as TEMPORAL_TLS_* file paths."
    )


class TemporalSpec(KubeModel):
    address: str | None = Field(
        default=None,
        max_length=512,
        pattern=ADDRESS_PATTERN,
        description="Temporal frontend `host:port`. Default: the operator's "
        "--default-temporal-address (Helm value temporal.defaultAddress).",
    )
    namespace: str = Field(
        default="default", min_length=1, max_length=253, description="Temporal namespace."
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=f"Secret key holding {_env('temporal_api_key')} (e.g. Temporal Cloud).",
    )
    tls: TemporalTLS | None = Field(default=None, description="mTLS client certificate.")


RedisMode = Literal["Managed", "External", "Disabled"]
StorageType = Literal["EmptyDir", "PersistentVolumeClaim"]


class RedisStorage(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.type) || self.type != 'PersistentVolumeClaim' || !has(self.size) "
                    "|| !isQuantity(string(self.size)) "
                    "|| quantity(string(self.size)).isGreaterThan(quantity('0'))",
                    "message": "spec.streaming.redis.storage.size: a PersistentVolumeClaim "
                    "needs a size greater than zero",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    type: StorageType = Field(
        default="EmptyDir",
        description="EmptyDir (streams are short-lived; default) or PersistentVolumeClaim.",
    )
    size: Quantity = quantity_field(default="1Gi", description="Size of the PVC.")
    storage_class_name: str | None = Field(default=None, max_length=253)

    @model_validator(mode="after")
    def _positive_size(self) -> RedisStorage:
        if self.type == "PersistentVolumeClaim":
            size = as_quantity(self.size)
            if size is None or size <= 0:
                raise ValueError(
                    "spec.streaming.redis.storage.size: a PersistentVolumeClaim "
                    "needs a size greater than zero"
                )
        return self


class RedisSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.mode != 'External' || has(self.url) || has(self.urlSecretRef)",
                    "message": "spec.streaming.redis: mode External needs url or urlSecretRef",
                    "reason": "FieldValueRequired",
                },
                {
                    "rule": "!(has(self.url) && has(self.urlSecretRef))",
                    "message": "spec.streaming.redis: set only one of url and urlSecretRef",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": "self.mode == 'External' || (!has(self.url) && !has(self.urlSecretRef))",
                    "message": "spec.streaming.redis: url and urlSecretRef are only valid with mode External",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    mode: RedisMode = Field(
        default="Disabled",
        description="Managed: the operator runs a Redis StatefulSet for this agent. "
        "External: use url / urlSecretRef. Disabled: tokens flow through Temporal only.",
    )
    url: str | None = Field(
        default=None, max_length=2048, pattern=REDIS_URL_PATTERN, description="External Redis URL."
    )
    url_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the External Redis URL."
    )
    image: str | None = Field(
        default=None, min_length=1, description="Managed Redis image (default: the operator's)."
    )
    storage: RedisStorage = Field(
        default_factory=RedisStorage,
        description="Managed Redis storage.",
        json_schema_extra={"default": {}},
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU/memory of the Managed Redis pod."
    )

    @model_validator(mode="after")
    def _mode_and_url(self) -> RedisSpec:
        has_url = self.url is not None or self.url_secret_ref is not None
        if self.mode == "External" and not has_url:
            raise ValueError("spec.streaming.redis: mode External needs url or urlSecretRef")
        if self.url is not None and self.url_secret_ref is not None:
            raise ValueError("spec.streaming.redis: set only one of url and urlSecretRef")
        if self.mode != "External" and has_url:
            raise ValueError(
                "spec.streaming.redis: url and urlSecretRef are only valid with mode External"
            )
        return self


class StreamingSpec(KubeModel):
    tokens: bool = Field(default=True, description=f"{_env('token_streaming')}.")
    max_len: int = Field(
        default=10000, ge=1, description=f"{_env('stream_maxlen')} (XADD MAXLEN ~ N)."
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, description=f"{_env('stream_ttl_seconds')} (sliding EXPIRE)."
    )
    # The default names `mode` because the API server checks the CEL rules on defaults too.
    redis: RedisSpec = Field(
        default_factory=RedisSpec, json_schema_extra={"default": {"mode": "Disabled"}}
    )


class AutoscalingSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "spec.autoscaling: minReplicas must be <= maxReplicas",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="HPA minReplicas.")
    max_replicas: int = Field(ge=1, le=1000, description="HPA maxReplicas.")
    target_cpu_utilization_percentage: int = Field(
        default=80,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU utilization the HPA aims at.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("spec.autoscaling: minReplicas must be <= maxReplicas")
        return self


AUTOSCALING_NEEDS_CPU = (
    "spec.autoscaling: the HorizontalPodAutoscaler scales on CPU utilization, a percentage of "
    "the CPU request: set spec.resources.requests.cpu"
)


class DeepAgentSpec(KubeModel):
    """Desired state of a DeepAgent: a worker Deployment for one graph (plus optional Redis)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.autoscaling) && has(self.replicas))",
                    "message": "spec.replicas and spec.autoscaling are mutually exclusive: "
                    "remove spec.replicas when spec.autoscaling is set",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": "!has(self.autoscaling) || (has(self.resources) "
                    "&& has(self.resources.requests) && 'cpu' in self.resources.requests)",
                    "message": AUTOSCALING_NEEDS_CPU,
                    "reason": "FieldValueRequired",
                },
            ]
        }
    )

    graph: str = Field(
        max_length=512,
        pattern=GRAPH_PATTERN,
        description="`package.module:attribute` of a compiled graph or zero-arg factory "
        f"({_env('graph')}).",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Worker image. Default: the operator's runtime image.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Pull policy of the worker image."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets for pulling the worker image."
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Worker replicas (default 1). Not allowed together with autoscaling.",
    )
    task_queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=TASK_QUEUE_PATTERN,
        description="Temporal task queue. Default: metadata.name.",
    )
    temporal: TemporalSpec = Field(
        default_factory=TemporalSpec,
        description="Temporal connection (TEMPORAL_* variables).",
        json_schema_extra={"default": {}},
    )
    streaming: StreamingSpec = Field(
        default_factory=StreamingSpec,
        description="Token streaming: Phase 1 through Temporal, Phase 2 through Redis.",
        json_schema_extra={"default": {}},
    )
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=256,
        description="Extra environment of the workers (after the operator's own variables). "
        "Referenced Secrets/ConfigMaps are hashed: changing them rolls the workers.",
    )
    env_from: list[EnvFromSource] | None = Field(
        default=None,
        max_length=64,
        description="Secrets/ConfigMaps exported as environment (e.g. model API keys).",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU/memory requests and limits of each worker."
    )
    node_selector: dict[str, str] | None = string_map_field(
        "Node labels the worker pods must match.",
        "spec.nodeSelector",
        label_values=True,
        max_items=64,
    )
    tolerations: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=64,
        description="Tolerations of the worker pods (core/v1 Toleration).",
        json_schema_extra={
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Affinity of the worker pods (core/v1 Affinity).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    service_account_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="ServiceAccount of the worker pods (default: none, no API token mounted).",
    )
    pod_annotations: dict[str, str] | None = string_map_field(
        "Extra annotations of the worker pods.",
        "spec.podAnnotations",
        label_values=False,
        max_items=128,
    )
    pod_labels: dict[str, str] | None = string_map_field(
        "Extra labels of the worker pods.", "spec.podLabels", label_values=True, max_items=64
    )
    health_port: int = Field(
        default=8080, ge=1, le=65535, description=f"{_env('health_port')} (/healthz, /readyz)."
    )
    shutdown_grace_seconds: int | None = ws.SHUTDOWN_GRACE_FIELD
    payload_storage: ws.PayloadStorageSpec | None = ws.PAYLOAD_STORAGE_FIELD
    history: ws.HistorySpec | None = ws.HISTORY_FIELD
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Create a HorizontalPodAutoscaler; the operator then leaves replicas alone.",
    )
    gateway: GatewaySpec | None = gateway_field()

    @model_validator(mode="after")
    def _replicas_vs_autoscaling(self) -> DeepAgentSpec:
        if self.autoscaling is not None and self.replicas is not None:
            raise ValueError(
                "spec.replicas and spec.autoscaling are mutually exclusive: "
                "remove spec.replicas when spec.autoscaling is set"
            )
        if self.autoscaling is not None and "cpu" not in (
            (self.resources.requests if self.resources else None) or {}
        ):
            raise ValueError(AUTOSCALING_NEEDS_CPU)
        return self

    @model_validator(mode="after")
    def _label_maps(self) -> DeepAgentSpec:
        check_string_map("spec.podLabels", self.pod_labels, label_values=True)
        check_string_map("spec.podAnnotations", self.pod_annotations, label_values=False)
        check_string_map("spec.nodeSelector", self.node_selector, label_values=True)
        return self


Phase = Literal["Pending", "Ready", "Degraded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]


def _int_field(fmt: str, **kw: Any) -> Any:
    """An integer the API server stores as ``int32`` / ``int64`` (Kubernetes' formats)."""
    return Field(default=None, json_schema_extra={"format": fmt}, **kw)


class _Observed(KubeModel):
    """A status model: read back from the API too, so unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


class Condition(_Observed):
    """One entry of status.conditions (the usual Kubernetes condition shape)."""

    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = _int_field("int64")


class WorkersStatus(_Observed):
    """The worker Deployment as last observed."""

    deployment: str | None = None
    replicas: int | None = _int_field("int32")
    ready_replicas: int | None = _int_field("int32")
    updated_replicas: int | None = _int_field("int32")
    available_replicas: int | None = _int_field("int32")
    config_hash: str | None = None


class RedisStatus(_Observed):
    """Where the workers' Redis is and whether it is ready."""

    mode: str | None = None
    status: str | None = None
    endpoint: str | None = None
    secret_name: str | None = None
    ready: bool | None = None


class DeepAgentStatus(_Observed):
    """Observed state, written by the operator."""

    observed_generation: int | None = _int_field("int64")
    phase: Phase | None = None
    ready: str | None = Field(default=None, description="readyReplicas/replicas of the workers.")
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    workers: WorkersStatus | None = None
    redis: RedisStatus | None = None
    gateway: GatewayStatus | None = None
    task_queue: str | None = None


#: Top-level keys of ``status`` that the operator owns (it patches only these).
STATUS_KEYS = tuple(f.alias or name for name, f in DeepAgentStatus.model_fields.items())


def parse_spec(spec: dict[str, Any] | None) -> DeepAgentSpec:
    """Validate a raw ``spec`` dict (camelCase) into the model (raises pydantic errors)."""
    return DeepAgentSpec.model_validate(dict(spec or {}))


def format_validation_error(exc: Exception) -> tuple[str, str]:
    """(field path, message) of the first problem in a pydantic ``ValidationError``."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return "spec", str(exc)
    first = errors()[0]
    loc = ".".join(
        f"[{p}]" if isinstance(p, int) else str(p) for p in first.get("loc", ())
    ).replace(".[", "[")
    path = "spec" + ("." + loc if loc else "")
    msg = first.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return path, msg
