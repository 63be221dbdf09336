"""``spec.gateway`` and ``status.gateway``: the LangGraph-protocol gateway of a DeepAgent.

With ``spec.gateway.enabled`` the operator runs ``deepagent-temporal serve`` next to the
workers (Deployment and Service ``<name>-gateway``), so the LangGraph SDKs, agent-chat-ui and
LangGraph Studio reach the agent over HTTP with an API key. Kept apart from :mod:`.model`
(which embeds these classes) so that each module stays small; the CEL rules here are mirrored
by pydantic validators, as in :mod:`.model`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from deepagent_temporal.contract import WorkerEnv

from .corev1 import (
    KubeModel,
    ResourceRequirements,
    SecretKeySelector,
    check_string_map,
    string_map_field,
)

ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]

#: The Service port clients use (`http://<name>-gateway.<ns>.svc`); the pods listen on the
#: gateway's own port, the contract's default (2024, like `langgraph dev`).
DEFAULT_SERVICE_PORT = 80
GATEWAY_PORT: int = next(v.default for v in WorkerEnv.variables() if v.field == "gateway_port")

# The Service `<name>-gateway` is named after the DeepAgent: a DNS-1035 label (as for Redis).
GATEWAY_NAME_MESSAGE = (
    "metadata.name: with spec.gateway.enabled the name must be a DNS-1035 label "
    "(lowercase letters, digits and '-', starting with a letter, no dots): "
    "the gateway Service <name>-gateway is named after it"
)
OPTIONAL_KEY_MESSAGE = (
    "spec.gateway.apiKeySecretRef.optional: the gateway needs its API key; "
    "optional: true is not allowed"
)


class GatewayServiceSpec(KubeModel):
    type: ServiceType = Field(
        default="ClusterIP",
        description="ClusterIP (in-cluster clients, or behind an Ingress; default), NodePort "
        "or LoadBalancer.",
    )
    port: int = Field(
        default=DEFAULT_SERVICE_PORT,
        ge=1,
        le=65535,
        description=f"Port of the Service; it targets the pods' port {GATEWAY_PORT} "
        f"({WorkerEnv.name('gateway_port')}).",
    )
    annotations: dict[str, str] | None = string_map_field(
        "Annotations of the Service (e.g. a cloud load balancer's settings).",
        "spec.gateway.service.annotations",
        label_values=False,
        max_items=64,
    )

    @model_validator(mode="after")
    def _annotations(self) -> GatewayServiceSpec:
        check_string_map("spec.gateway.service.annotations", self.annotations, label_values=False)
        return self


class GatewaySpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.apiKeySecretRef) || !has(self.apiKeySecretRef.optional) "
                    "|| !self.apiKeySecretRef.optional",
                    "message": OPTIONAL_KEY_MESSAGE,
                    "reason": "FieldValueForbidden",
                }
            ]
        }
    )

    enabled: bool = Field(
        default=False,
        description="Run `deepagent-temporal serve` (Deployment and Service `<name>-gateway`): "
        "the LangGraph Agent Server protocol over HTTP, for the LangGraph SDKs and "
        "agent-chat-ui.",
    )
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Gateway replicas (stateless: any replica serves)."
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the API key(s) clients send in `x-api-key` (one a "
        "line), mounted read-only as the gateway's "
        f"{WorkerEnv.name('gateway_api_keys_file')}. Default: a Secret `<name>-gateway-api-key` "
        "(key `api-key`) generated once.",
    )
    service: GatewayServiceSpec = Field(
        default_factory=GatewayServiceSpec,
        description="The Service `<name>-gateway`.",
        json_schema_extra={"default": {}},
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU/memory requests and limits of each gateway pod."
    )
    worker_env_from: bool = Field(
        default=True,
        description="Give the gateway the workers' `spec.envFrom` too (default): it imports "
        "the same graph module, and a module that builds its model at import (e.g. "
        "`ChatOpenAI()`) needs the provider key there. `false` keeps those Secrets with the "
        "workers, for a module that imports without them.",
    )

    @model_validator(mode="after")
    def _required_key(self) -> GatewaySpec:
        if self.api_key_secret_ref is not None and self.api_key_secret_ref.optional:
            raise ValueError(OPTIONAL_KEY_MESSAGE)
        return self


def gateway_field() -> Any:
    """``DeepAgentSpec.gateway``: unset by default (the CRD defaults nothing for it)."""
    return Field(
        default=None,
        description="The LangGraph-protocol HTTP gateway (`deepagent-temporal serve`).",
    )


def gateway_enabled(spec: Any) -> bool:
    """True when a DeepAgent spec asks for the gateway."""
    gateway = getattr(spec, "gateway", None)
    return gateway is not None and gateway.enabled


def check_gateway_name(name: str, spec: Any) -> None:
    """The mirror of the CRD's rule on ``metadata.name`` with the gateway (see :data:`GATEWAY_NAME_MESSAGE`)."""
    from .model import DNS1035_LABEL_PATTERN, SpecError

    if gateway_enabled(spec) and not re.match(DNS1035_LABEL_PATTERN, name):
        raise SpecError(
            "metadata.name",
            GATEWAY_NAME_MESSAGE.removeprefix("metadata.name: "),
            "recreate the DeepAgent under such a name, or disable spec.gateway",
            reason="InvalidName",
        )


def gateway_name_rule(dns1035: str) -> dict[str, str]:
    """The CRD's CEL rule behind :func:`check_gateway_name` (``dns1035``: a CEL string)."""
    return {
        "rule": "!has(self.spec.gateway) || !has(self.spec.gateway.enabled) "
        f"|| !self.spec.gateway.enabled || self.metadata.name.matches({dns1035})",
        "message": GATEWAY_NAME_MESSAGE,
        "reason": "FieldValueInvalid",
    }


class _Observed(KubeModel):
    model_config = ConfigDict(extra="ignore")


class SecretKeyRef(_Observed):
    name: str | None = None
    key: str | None = None


class GatewayStatus(_Observed):
    """The gateway as last observed (absent while spec.gateway is not enabled)."""

    endpoint: str | None = Field(default=None, description="In-cluster URL of the gateway Service.")
    service_type: str | None = None
    deployment: str | None = None
    replicas: int | None = Field(default=None, json_schema_extra={"format": "int32"})
    ready_replicas: int | None = Field(default=None, json_schema_extra={"format": "int32"})
    ready: str | None = Field(default=None, description="readyReplicas/replicas of the gateway.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Where clients find the API key."
    )
