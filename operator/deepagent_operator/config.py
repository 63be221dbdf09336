"""Operator-wide settings (flags, with environment variables as defaults; the chart sets both)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


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
    connect_timeout: float = 10.0
    #: Maximal retry back-off (seconds) for semantic errors (missing Secret, no image, ...).
    max_backoff_seconds: float = 300.0
    #: Thread pool size for the (blocking) Kubernetes client calls.
    workers: int = 16
    #: Port of the Prometheus text /metrics endpoint; 0 disables it.
    metrics_port: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        return cls(
            default_image=env.get("DEEPAGENT_DEFAULT_IMAGE", ""),
            redis_image=env.get("DEEPAGENT_REDIS_IMAGE", "") or DEFAULT_REDIS_IMAGE,
            default_temporal_address=env.get("DEEPAGENT_DEFAULT_TEMPORAL_ADDRESS", ""),
            namespaces=_split(env.get("DEEPAGENT_WATCH_NAMESPACES")),
            resync_seconds=_float(env, "DEEPAGENT_RESYNC_SECONDS", 60.0),
            watch_server_timeout=_float(env, "DEEPAGENT_WATCH_SERVER_TIMEOUT", 300.0),
            watch_client_timeout=_float(env, "DEEPAGENT_WATCH_CLIENT_TIMEOUT", 330.0),
            connect_timeout=_float(env, "DEEPAGENT_CONNECT_TIMEOUT", 10.0),
            max_backoff_seconds=_float(env, "DEEPAGENT_MAX_BACKOFF_SECONDS", 300.0),
            workers=int(_float(env, "DEEPAGENT_WORKERS", 16)),
            metrics_port=int(_float(env, "DEEPAGENT_METRICS_PORT", 0)),
        )

    def with_overrides(self, **kw: object) -> OperatorConfig:
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})
