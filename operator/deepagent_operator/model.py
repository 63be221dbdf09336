"""The ``DeepAgent.spec`` model: single source of truth for the CRD schema and the operator.

``crds/deepagent.yaml`` is generated from these classes (see :mod:`.crd`), so every
type, enum, default, bound and pattern here is enforced by the Kubernetes API server too.
Cross-field rules are written twice, once as CEL (``x-kubernetes-validations``, checked by
the API server) and once as a pydantic validator (checked by the operator, e.g. for
objects created before the CRD was upgraded); the unit tests keep the two in agreement.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# `package.module:attribute` (attribute may be dotted, e.g. `pkg.mod:Factory.build`).
GRAPH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
# `host:port` with a DNS name, IPv4 address or bracketed IPv6 address; port 1-65535.
ADDRESS_PATTERN = (
    r"^([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
)
# DNS-1123 subdomain (names of Secrets, ConfigMaps, ServiceAccounts, ...).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
REDIS_URL_PATTERN = r"^rediss?://[^\s]+$"
TASK_QUEUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9._/]*[A-Za-z0-9])?$"

# Longest DeepAgent name: `<name>-redis-<controller-revision-hash>` must stay a valid label.
MAX_NAME_LENGTH = 40

Quantity = int | str
NameStr = str


def _quantity_field(**kw: Any) -> Any:
    return Field(
        json_schema_extra={"pattern": QUANTITY_PATTERN, "x-kubernetes-int-or-string": True},
        **kw,
    )


def _quantity_map_field() -> Any:
    """A map of resource name to quantity, as core/v1 ResourceRequirements has it."""
    return Field(
        default=None,
        json_schema_extra={
            "additionalProperties": {
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "pattern": QUANTITY_PATTERN,
                "x-kubernetes-int-or-string": True,
            }
        },
    )


def _name_field(description: str, **kw: Any) -> Any:
    return Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description=description, **kw)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=False,
    )

    def dump(self) -> dict[str, Any]:
        """The camelCase dict of the set and defaulted fields, without ``None``."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(_Model):
    name: NameStr = _name_field("Name of the referenced object in the same namespace.")


class SecretKeySelector(_Model):
    name: NameStr = _name_field("Name of a Secret in the DeepAgent's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")
    optional: bool | None = Field(default=None, description="Do not fail if it is missing.")


class ConfigMapKeySelector(_Model):
    name: NameStr = _name_field("Name of a ConfigMap in the DeepAgent's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the ConfigMap.")
    optional: bool | None = Field(default=None, description="Do not fail if it is missing.")


class ObjectFieldSelector(_Model):
    field_path: str = Field(min_length=1, description="Path of the field, e.g. metadata.name.")
    api_version: str | None = None


class ResourceFieldSelector(_Model):
    resource: str = Field(min_length=1)
    container_name: str | None = None
    divisor: Quantity | None = _quantity_field(default=None)


class EnvVarSource(_Model):
    secret_key_ref: SecretKeySelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None


class EnvVar(_Model):
    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = None
    value_from: EnvVarSource | None = None


class SecretEnvSource(_Model):
    name: NameStr = _name_field("Name of a Secret in the DeepAgent's namespace.")
    optional: bool | None = None


class ConfigMapEnvSource(_Model):
    name: NameStr = _name_field("Name of a ConfigMap in the DeepAgent's namespace.")
    optional: bool | None = None


class EnvFromSource(_Model):
    prefix: str | None = Field(default=None, max_length=256)
    secret_ref: SecretEnvSource | None = None
    config_map_ref: ConfigMapEnvSource | None = None


class ResourceRequirements(_Model):
    limits: dict[str, Quantity] | None = _quantity_map_field()
    requests: dict[str, Quantity] | None = _quantity_map_field()


class TemporalTLS(_Model):
    secret_name: NameStr = _name_field(
        "Secret with the client certificate (`tls.crt`), key (`tls.key`) and optionally the "
        "server CA (`ca.crt`); mounted read-only and passed as TEMPORAL_TLS_* file paths."
    )


class TemporalSpec(_Model):
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
        default=None, description="Secret key holding TEMPORAL_API_KEY (e.g. Temporal Cloud)."
    )
    tls: TemporalTLS | None = Field(default=None, description="mTLS client certificate.")


RedisMode = Literal["Managed", "External", "Disabled"]
StorageType = Literal["EmptyDir", "PersistentVolumeClaim"]


class RedisStorage(_Model):
    type: StorageType = Field(
        default="EmptyDir",
        description="EmptyDir (streams are short-lived; default) or PersistentVolumeClaim.",
    )
    size: Quantity = _quantity_field(default="1Gi", description="Size of the PVC.")
    storage_class_name: str | None = Field(default=None, max_length=253)


class RedisSpec(_Model):
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


class StreamingSpec(_Model):
    tokens: bool = Field(default=True, description="DEEPAGENT_TOKEN_STREAMING.")
    max_len: int = Field(
        default=10000, ge=1, description="DEEPAGENT_STREAM_MAXLEN (XADD MAXLEN ~ N)."
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, description="DEEPAGENT_STREAM_TTL_SECONDS (sliding EXPIRE)."
    )
    # The default names `mode` because the API server checks the CEL rules on defaults too.
    redis: RedisSpec = Field(
        default_factory=RedisSpec, json_schema_extra={"default": {"mode": "Disabled"}}
    )


class AutoscalingSpec(_Model):
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


class DeepAgentSpec(_Model):
    """Desired state of a DeepAgent: a worker Deployment for one graph (plus optional Redis)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.autoscaling) && has(self.replicas))",
                    "message": "spec.replicas and spec.autoscaling are mutually exclusive: "
                    "remove spec.replicas when spec.autoscaling is set",
                    "reason": "FieldValueForbidden",
                }
            ]
        }
    )

    graph: str = Field(
        max_length=512,
        pattern=GRAPH_PATTERN,
        description="`package.module:attribute` of a compiled graph or zero-arg factory "
        "(DEEPAGENT_GRAPH).",
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
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the worker pods must match."
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
    pod_annotations: dict[str, str] | None = Field(
        default=None, description="Extra annotations of the worker pods."
    )
    pod_labels: dict[str, str] | None = Field(
        default=None, description="Extra labels of the worker pods."
    )
    health_port: int = Field(
        default=8080, ge=1, le=65535, description="DEEPAGENT_HEALTH_PORT (/healthz, /readyz)."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Create a HorizontalPodAutoscaler; the operator then leaves replicas alone.",
    )

    @model_validator(mode="after")
    def _replicas_vs_autoscaling(self) -> DeepAgentSpec:
        if self.autoscaling is not None and self.replicas is not None:
            raise ValueError(
                "spec.replicas and spec.autoscaling are mutually exclusive: "
                "remove spec.replicas when spec.autoscaling is set"
            )
        return self


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
