"""Operator-wide settings (flags, with environment variables as defaults; the chart sets both).

This module is the one home of the operator's own environment variable names; the worker
pods' variables are the runtime's contract (``deepagent_temporal.contract.WorkerEnv``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"

# Environment variables of the operator process.
WATCH_NAMESPACES_ENV = "DEEPAGENT_WATCH_NAMESPACES"
DEFAULT_IMAGE_ENV = "DEEPAGENT_DEFAULT_IMAGE"
REDIS_IMAGE_ENV = "DEEPAGENT_REDIS_IMAGE"
DEFAULT_TEMPORAL_ADDRESS_ENV = "DEEPAGENT_DEFAULT_TEMPORAL_ADDRESS"
RESYNC_SECONDS_ENV = "DEEPAGENT_RESYNC_SECONDS"
WATCH_SERVER_TIMEOUT_ENV = "DEEPAGENT_WATCH_SERVER_TIMEOUT"
WATCH_CLIENT_TIMEOUT_ENV = "DEEPAGENT_WATCH_CLIENT_TIMEOUT"
# Not DEEPAGENT_CONNECT_TIMEOUT: the workers read that one as their Temporal connect timeout.
KUBE_CONNECT_TIMEOUT_ENV = "DEEPAGENT_KUBE_CONNECT_TIMEOUT"
MAX_BACKOFF_SECONDS_ENV = "DEEPAGENT_MAX_BACKOFF_SECONDS"
WORKERS_ENV = "DEEPAGENT_WORKERS"
METRICS_PORT_ENV = "DEEPAGENT_METRICS_PORT"
LIVENESS_ENV = "DEEPAGENT_LIVENESS"
REDIS_PROBE_TIMEOUT_ENV = "DEEPAGENT_REDIS_PROBE_TIMEOUT"
# Where the operator's own pod runs (the chart sets both): Managed Redis NetworkPolicies admit
# it, for the AUTH + PING readiness check.
OPERATOR_NAMESPACE_ENV = "DEEPAGENT_OPERATOR_NAMESPACE"
OPERATOR_POD_LABELS_ENV = "DEEPAGENT_OPERATOR_POD_LABELS"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _labels(value: str | None) -> tuple[tuple[str, str], ...]:
    """``k=v,k2=v2`` -> ((k, v), (k2, v2))."""
    pairs = (p.partition("=") for p in _split(value))
    return tuple(sorted((k.strip(), v.strip()) for k, sep, v in pairs if sep and k.strip()))


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    return float(raw) if raw not in (None, "") else default


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """What the operator needs besides each DeepAgent's spec."""

    #: Image used when ``spec.image`` is unset (Helm: runtimeImage). Empty = no default.
    default_image: str = ""
    #: Image of Managed Redis (Helm: redisImage).
    redis_image: str = DEFAULT_REDIS_IMAGE
    #: Temporal address used when ``spec.temporal.address`` is unset. Empty = no default.
    default_temporal_address: str = ""
    #: Namespaces to watch; empty = all namespaces (cluster-wide).
    namespaces: tuple[str, ...] = ()
    #: Full resync period (seconds): re-reads referenced Secrets/ConfigMaps, repairs drift.
    resync_seconds: float = 60.0
    #: kopf watch timeouts (seconds).
    watch_server_timeout: float = 300.0
    watch_client_timeout: float = 330.0
    #: Timeout (seconds) of connecting to the Kubernetes API server.
    connect_timeout: float = 10.0
    #: Maximal retry back-off (seconds) for semantic errors (missing Secret, no image, ...).
    max_backoff_seconds: float = 300.0
    #: Thread pool size for the (blocking) Kubernetes client calls.
    workers: int = 16
    #: Port of the Prometheus /metrics endpoint; 0 disables it.
    metrics_port: int = 0
    #: Seconds the AUTH + PING readiness check of a Managed Redis may take.
    redis_probe_timeout: float = 2.0
    #: Namespace and pod labels of the operator's own pod; empty when unknown (outside a pod).
    operator_namespace: str = ""
    operator_pod_labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Settings from the operator's environment variables (unset or empty: default)."""
        env = os.environ if env is None else env
        return cls(
            default_image=env.get(DEFAULT_IMAGE_ENV, ""),
            redis_image=env.get(REDIS_IMAGE_ENV, "") or DEFAULT_REDIS_IMAGE,
            default_temporal_address=env.get(DEFAULT_TEMPORAL_ADDRESS_ENV, ""),
            namespaces=_split(env.get(WATCH_NAMESPACES_ENV)),
            resync_seconds=_float(env, RESYNC_SECONDS_ENV, 60.0),
            watch_server_timeout=_float(env, WATCH_SERVER_TIMEOUT_ENV, 300.0),
            watch_client_timeout=_float(env, WATCH_CLIENT_TIMEOUT_ENV, 330.0),
            connect_timeout=_float(env, KUBE_CONNECT_TIMEOUT_ENV, 10.0),
            max_backoff_seconds=_float(env, MAX_BACKOFF_SECONDS_ENV, 300.0),
            workers=int(_float(env, WORKERS_ENV, 16)),
            metrics_port=int(_float(env, METRICS_PORT_ENV, 0)),
            redis_probe_timeout=_float(env, REDIS_PROBE_TIMEOUT_ENV, 2.0),
            operator_namespace=env.get(OPERATOR_NAMESPACE_ENV, ""),
            operator_pod_labels=_labels(env.get(OPERATOR_POD_LABELS_ENV)),
        )

    def with_overrides(self, **kw: object) -> OperatorConfig:
        """A copy with the given settings replaced (None leaves a setting as it is)."""
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})
