"""The core/v1 types a DeepAgent spec embeds (env, envFrom, resources), mirrored in pydantic.

They follow the Kubernetes field names and rules so that the generated CRD validates them
like the API server validates a Pod; :mod:`.model` builds the DeepAgent spec from them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# DNS-1123 subdomain (names of Secrets, ConfigMaps, ServiceAccounts, ...).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"

Quantity = int | str
NameStr = str


def quantity_field(**kw: Any) -> Any:
    """A resource quantity (``500m``, ``1Gi`` or a number), as Kubernetes accepts it."""
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


def name_field(description: str, **kw: Any) -> Any:
    """The name of an object in the DeepAgent's namespace (a DNS-1123 subdomain)."""
    return Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description=description, **kw)


class KubeModel(BaseModel):
    """Base of every model of the CRD: camelCase names, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=False,
    )

    def dump(self) -> dict[str, Any]:
        """The camelCase dict of the set and defaulted fields, without ``None``."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(KubeModel):
    name: NameStr = name_field("Name of the referenced object in the same namespace.")


class SecretKeySelector(KubeModel):
    name: NameStr = name_field("Name of a Secret in the DeepAgent's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")
    optional: bool | None = Field(default=None, description="Do not fail if it is missing.")


class ConfigMapKeySelector(KubeModel):
    name: NameStr = name_field("Name of a ConfigMap in the DeepAgent's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the ConfigMap.")
    optional: bool | None = Field(default=None, description="Do not fail if it is missing.")


class ObjectFieldSelector(KubeModel):
    field_path: str = Field(min_length=1, description="Path of the field, e.g. metadata.name.")
    api_version: str | None = None


class ResourceFieldSelector(KubeModel):
    resource: str = Field(min_length=1)
    container_name: str | None = None
    divisor: Quantity | None = quantity_field(default=None)


class EnvVarSource(KubeModel):
    secret_key_ref: SecretKeySelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None


class EnvVar(KubeModel):
    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = None
    value_from: EnvVarSource | None = None


class SecretEnvSource(KubeModel):
    name: NameStr = name_field("Name of a Secret in the DeepAgent's namespace.")
    optional: bool | None = None


class ConfigMapEnvSource(KubeModel):
    name: NameStr = name_field("Name of a ConfigMap in the DeepAgent's namespace.")
    optional: bool | None = None


class EnvFromSource(KubeModel):
    prefix: str | None = Field(default=None, max_length=256)
    secret_ref: SecretEnvSource | None = None
    config_map_ref: ConfigMapEnvSource | None = None


class ResourceRequirements(KubeModel):
    limits: dict[str, Quantity] | None = _quantity_map_field()
    requests: dict[str, Quantity] | None = _quantity_map_field()
