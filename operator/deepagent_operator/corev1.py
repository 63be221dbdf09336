"""The core/v1 types a DeepAgent spec embeds (env, envFrom, resources), mirrored in pydantic.

They follow the Kubernetes field names and rules so that the generated CRD validates them
like the API server validates a Pod; :mod:`.model` builds the DeepAgent spec from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kubernetes.utils import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# DNS-1123 subdomain (names of Secrets, ConfigMaps, ServiceAccounts, ...).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
# A quantity without a minus sign: container resources cannot be negative.
RESOURCE_QUANTITY_PATTERN = "^\\+?" + QUANTITY_PATTERN.removeprefix("^(\\+|-)?")
# Label values: at most 63 alphanumerics, '-', '_', '.', beginning and ending alphanumeric.
# (Patterns here avoid backslashes so that CEL string literals can carry them as they are.)
LABEL_VALUE_PATTERN = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_VALUE_MAX = 63
_SUBDOMAIN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
# Label and annotation keys: `[prefix/]name`, prefix a DNS-1123 subdomain (<= 253), name as a
# label value but not empty (<= 63). The lengths are checked apart from the pattern.
QUALIFIED_NAME_PATTERN = f"^({_SUBDOMAIN}/)?{_LABEL_NAME}$"
# Resource names of a container: the standard ones, hugepages-<size>, or `domain/name`.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
QUALIFIED_RESOURCE_PATTERN = f"^{_SUBDOMAIN}/{_LABEL_NAME}$"


def cel_string(text: str) -> str:
    """``text`` as a CEL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label / annotation key (None when it is)."""
    if not re.match(QUALIFIED_NAME_PATTERN, key):
        return "must be [prefix/]name (alphanumerics, '-', '_', '.'; prefix a DNS subdomain)"
    prefix, _, name = key.rpartition("/")
    if len(name) > 63:
        return "its name part must be at most 63 characters"
    if len(prefix) > 253:
        return "its prefix must be at most 253 characters"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value (None when it is)."""
    if len(value) > LABEL_VALUE_MAX:
        return f"must be at most {LABEL_VALUE_MAX} characters"
    if not re.match(LABEL_VALUE_PATTERN, value):
        return "must be alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric"
    return None


_KEY_OK = (
    f"k.matches({cel_string(QUALIFIED_NAME_PATTERN)}) && k.lastIndexOf('/') <= 253 "
    "&& k.substring(k.lastIndexOf('/') + 1).size() <= 63"
)
_KEY_HELP = (
    "keys must be [prefix/]name: name at most 63 characters of alphanumerics, '-', '_', '.', "
    "beginning and ending with an alphanumeric; prefix a DNS subdomain of at most 253 characters"
)


def string_map_field(description: str, path: str, *, label_values: bool, max_items: int) -> Any:
    """A map with label-key keys (labels, annotations, node selectors), checked by the API
    server: the keys by a CEL rule, the values by a pattern when they are label values."""
    values: dict[str, Any] = {"type": "string"}
    if label_values:
        values.update(maxLength=LABEL_VALUE_MAX, pattern=LABEL_VALUE_PATTERN)
    return Field(
        default=None,
        description=description,
        json_schema_extra={
            "maxProperties": max_items,
            "additionalProperties": values,
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, {_KEY_OK})",
                    "message": f"{path}: {_KEY_HELP}",
                    "reason": "FieldValueInvalid",
                }
            ],
        },
    )


def check_string_map(path: str, items: Mapping[str, str] | None, *, label_values: bool) -> None:
    """The pydantic mirror of :func:`string_map_field`'s rules (raises ValueError)."""
    for key, value in (items or {}).items():
        problem = qualified_name_problem(key)
        if problem:
            raise ValueError(f"{path}: invalid key {key!r}: {problem}")
        problem = label_value_problem(value) if label_values else None
        if problem:
            raise ValueError(f"{path}.{key}: invalid value {value!r}: {problem}")


Quantity = int | str
NameStr = str


def quantity_field(**kw: Any) -> Any:
    """A resource quantity (``500m``, ``1Gi`` or a number), as Kubernetes accepts it."""
    return Field(
        json_schema_extra={"pattern": QUANTITY_PATTERN, "x-kubernetes-int-or-string": True},
        **kw,
    )


_RESOURCE_NAME_OK = (
    f"k in {list(STANDARD_RESOURCES)!r} || k.startsWith('hugepages-') "
    f"|| k.matches({cel_string(QUALIFIED_RESOURCE_PATTERN)})"
)


def resource_name_ok(name: str) -> bool:
    """A container resource name: cpu, memory, ephemeral-storage, hugepages-*, domain/name."""
    return (
        name in STANDARD_RESOURCES
        or name.startswith("hugepages-")
        or bool(re.match(QUALIFIED_RESOURCE_PATTERN, name))
    )


def _quantity_map_field(path: str) -> Any:
    """A map of resource name to non-negative quantity, as core/v1 ResourceRequirements has it."""
    return Field(
        default=None,
        json_schema_extra={
            "maxProperties": 16,
            "additionalProperties": {
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "maxLength": 64,
                "pattern": RESOURCE_QUANTITY_PATTERN,
                "x-kubernetes-int-or-string": True,
            },
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, {_RESOURCE_NAME_OK})",
                    "message": f"{path}: resource names must be cpu, memory, ephemeral-storage, "
                    "hugepages-<size> or a fully qualified name (example.com/gpu)",
                    "reason": "FieldValueInvalid",
                }
            ],
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


def _one_of(*fields: str) -> str:
    """CEL: exactly one of ``fields`` is set."""
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"


def _rules(*rules: dict[str, str]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


_ENV_SOURCES = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")


class EnvVarSource(KubeModel):
    model_config = _rules(
        {
            "rule": _one_of(*_ENV_SOURCES),
            "message": "valueFrom: set exactly one of " + ", ".join(_ENV_SOURCES),
            "reason": "FieldValueInvalid",
        }
    )

    secret_key_ref: SecretKeySelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        set_ = [
            self.secret_key_ref,
            self.config_map_key_ref,
            self.field_ref,
            self.resource_field_ref,
        ]
        if sum(v is not None for v in set_) != 1:
            raise ValueError("valueFrom: set exactly one of " + ", ".join(_ENV_SOURCES))
        return self


class EnvVar(KubeModel):
    model_config = _rules(
        {
            "rule": "!has(self.valueFrom) || !has(self.value) || size(self.value) == 0",
            "message": "value and valueFrom are mutually exclusive",
            "reason": "FieldValueForbidden",
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value_from is not None and self.value:
            raise ValueError("value and valueFrom are mutually exclusive")
        return self


class SecretEnvSource(KubeModel):
    name: NameStr = name_field("Name of a Secret in the DeepAgent's namespace.")
    optional: bool | None = None


class ConfigMapEnvSource(KubeModel):
    name: NameStr = name_field("Name of a ConfigMap in the DeepAgent's namespace.")
    optional: bool | None = None


class EnvFromSource(KubeModel):
    model_config = _rules(
        {
            "rule": _one_of("secretRef", "configMapRef"),
            "message": "set exactly one of secretRef and configMapRef",
            "reason": "FieldValueInvalid",
        }
    )

    prefix: str | None = Field(default=None, max_length=256)
    secret_ref: SecretEnvSource | None = None
    config_map_ref: ConfigMapEnvSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("set exactly one of secretRef and configMapRef")
        return self


def as_quantity(value: Any) -> Any:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return None


_REQUESTS_LE_LIMITS = (
    "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) "
    "|| !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) "
    "|| quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)"
)


class ResourceRequirements(KubeModel):
    model_config = _rules(
        {
            "rule": _REQUESTS_LE_LIMITS,
            "message": "a request must not exceed the limit of the same resource",
            "reason": "FieldValueInvalid",
        }
    )

    limits: dict[str, Quantity] | None = _quantity_map_field("limits")
    requests: dict[str, Quantity] | None = _quantity_map_field("requests")

    @model_validator(mode="after")
    def _names_and_bounds(self) -> ResourceRequirements:
        for which, items in (("limits", self.limits), ("requests", self.requests)):
            for key, value in (items or {}).items():
                if not resource_name_ok(key):
                    raise ValueError(f"{which}: invalid resource name {key!r}")
                amount = as_quantity(value)
                if amount is None or amount < 0:
                    raise ValueError(f"{which}.{key}: {value!r} is not a non-negative quantity")
        for key, value in (self.requests or {}).items():
            limit = (self.limits or {}).get(key)
            if limit is not None and as_quantity(value) > as_quantity(limit):
                raise ValueError(f"requests.{key}: {value} exceeds the limit {limit}")
        return self
