"""Runtime settings of a DeepAgent spec: ``payloadStorage``, ``history``, ``shutdownGraceSeconds``.

Each becomes worker variables of the runtime's ``WorkerEnv`` contract (see
``docs/long-runs.md``): payload storage moves large payloads (the graph state every node
activity carries) to an S3 bucket so that Event History keeps a reference; the history
budget says when a run continues as new; the shutdown grace is how long running nodes may
finish after SIGTERM (the pod's termination grace period follows it). Unset fields leave
the runtime's defaults. :class:`~.model.DeepAgentSpec` takes the fields from here
(:data:`PAYLOAD_STORAGE_FIELD` and friends).

The models render themselves as ``WorkerEnv`` field values (:meth:`worker_values`) and
``secretKeyRef``\\ s (:meth:`PayloadStorageSpec.secret_refs`), so every Deployment that runs
the runtime (the workers; any client of the same runs needs the same settings) renders
them the same way.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from deepagent_temporal.contract import WorkerEnv

from .corev1 import KubeModel, NameStr, name_field

_env = WorkerEnv.name

# S3 bucket names as AWS S3 accepts them for new buckets (and as virtual-hosted-style
# requests need them): 3-63 lowercase letters, digits, '-' and '.', dot-separated labels
# that begin and end with a letter or digit.
BUCKET_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# `http(s)://host[:port][/path]`, no query or fragment (requests are path-style).
ENDPOINT_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
REGION_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
# Object key prefixes in S3's safe characters (no leading '/'), e.g. `deepagent/`.
PREFIX_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9!_.*'()/]*$"
# Keys of a Secret's data.
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

#: Temporal's payload limit (2 MiB): a larger threshold would store nothing.
MAX_THRESHOLD_BYTES = 2 * 1024 * 1024
#: Temporal's Event History limits of one run.
MAX_HISTORY_BYTES = 50 * 1024 * 1024
MAX_HISTORY_EVENTS = 51_200

Compression = Literal["zstd", "zlib", "none"]


def _secret_key_field(default: str | None, description: str) -> Any:
    return Field(
        default=default,
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description=description,
    )


class S3Spec(KubeModel):
    bucket: str = Field(
        min_length=3,
        max_length=63,
        pattern=BUCKET_PATTERN,
        description=f"{_env('payload_s3_bucket')}: the bucket (it must exist).",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=ENDPOINT_PATTERN,
        description=f"{_env('payload_s3_endpoint')}: an S3-compatible endpoint "
        "(`http(s)://host:port`, path-style requests). Default: AWS S3 in the region.",
    )
    region: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=REGION_PATTERN,
        description=f"{_env('payload_s3_region')}: the bucket's region "
        f"(default {WorkerEnv.payload_s3_region}).",
    )
    prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=PREFIX_PATTERN,
        description=f"{_env('payload_s3_prefix')}: prefix of the object keys, e.g. "
        "`deepagent/`; keep it while stored payloads are read.",
    )


class PayloadCredentials(KubeModel):
    name: NameStr = name_field(
        "Secret in the DeepAgent's namespace with the S3 access key (a missing Secret or key "
        "is a SpecValid=False condition; a change rolls the workers)."
    )
    access_key_id_key: str = _secret_key_field(
        _env("aws_access_key_id"), f"Key of the Secret set as {_env('aws_access_key_id')}."
    )
    secret_access_key_key: str = _secret_key_field(
        _env("aws_secret_access_key"),
        f"Key of the Secret set as {_env('aws_secret_access_key')}.",
    )
    session_token_key: str | None = _secret_key_field(
        None,
        f"Key of the Secret set as {_env('aws_session_token')} (temporary credentials).",
    )

    def keys(self) -> tuple[str, ...]:
        """The keys the Secret must have."""
        keys = (self.access_key_id_key, self.secret_access_key_key, self.session_token_key)
        return tuple(k for k in keys if k is not None)


class PayloadStorageSpec(KubeModel):
    s3: S3Spec = Field(description="Where payloads go.")
    credentials_secret_ref: PayloadCredentials | None = Field(
        default=None,
        description="Secret with the S3 credentials, set as AWS's standard variables. "
        "Unset: unsigned requests (or give the variables through spec.envFrom).",
    )
    threshold_bytes: int | None = Field(
        default=None,
        ge=1024,
        le=MAX_THRESHOLD_BYTES,
        description=f"{_env('payload_threshold_bytes')}: payloads this large or larger (after "
        f"compression) go to the bucket (default {WorkerEnv.payload_threshold_bytes}).",
    )
    compression: Compression | None = Field(
        default=None,
        description=f"{_env('payload_compression')}: compression of payloads of 1 KiB or "
        "more (default zstd). Clients need the same setting.",
    )

    def worker_values(self) -> dict[str, Any]:
        """``WorkerEnv`` field -> value (unset fields left to the runtime's defaults)."""
        values: dict[str, Any] = {
            "payload_s3_bucket": self.s3.bucket,
            "payload_s3_endpoint": self.s3.endpoint,
            "payload_s3_region": self.s3.region,
            "payload_s3_prefix": self.s3.prefix,
            "payload_threshold_bytes": self.threshold_bytes,
            "payload_compression": self.compression,
        }
        return {k: v for k, v in values.items() if v is not None}

    def secret_refs(self) -> dict[str, dict[str, str]]:
        """``WorkerEnv`` field -> ``secretKeyRef`` of the credentials."""
        c = self.credentials_secret_ref
        if c is None:
            return {}
        refs = {
            "aws_access_key_id": {"name": c.name, "key": c.access_key_id_key},
            "aws_secret_access_key": {"name": c.name, "key": c.secret_access_key_key},
        }
        if c.session_token_key is not None:
            refs["aws_session_token"] = {"name": c.name, "key": c.session_token_key}
        return refs


class HistorySpec(KubeModel):
    max_bytes: int | None = Field(
        default=None,
        ge=1024 * 1024,
        le=MAX_HISTORY_BYTES,
        description=f"{_env('history_max_bytes')}: a run continues as new once its Event "
        f"History passes this size (default {WorkerEnv.history_max_bytes}; Temporal's "
        "limit: 50 MiB).",
    )
    max_events: int | None = Field(
        default=None,
        ge=100,
        le=MAX_HISTORY_EVENTS,
        description=f"{_env('history_max_events')}: ... or this many events (default "
        f"{WorkerEnv.history_max_events}; Temporal's limit: 51,200). Lower it for large "
        "states (docs/long-runs.md: replays).",
    )

    def worker_values(self) -> dict[str, Any]:
        """``WorkerEnv`` field -> value (unset fields left to the runtime's defaults)."""
        values = {"history_max_bytes": self.max_bytes, "history_max_events": self.max_events}
        return {k: v for k, v in values.items() if v is not None}


#: Longest shutdown grace a spec may ask for.
MAX_SHUTDOWN_GRACE_SECONDS = 3600

# The fields of DeepAgentSpec (kept here so that the model stays one screen per concern).
PAYLOAD_STORAGE_FIELD: Any = Field(
    default=None,
    description="Large payloads (the graph state, tool outputs) go to an S3 bucket; Event "
    "History keeps a reference (docs/long-runs.md). Clients need the same settings.",
)
HISTORY_FIELD: Any = Field(
    default=None,
    description="When a run continues as new (same thread, same streams).",
)
SHUTDOWN_GRACE_FIELD: Any = Field(
    default=None,
    ge=0,
    le=MAX_SHUTDOWN_GRACE_SECONDS,
    description=f"{_env('shutdown_grace_seconds')}: seconds running nodes may finish after "
    f"SIGTERM (default {WorkerEnv.shutdown_grace_seconds:g}); the pods' "
    "terminationGracePeriodSeconds is this plus 25, at least 60.",
)

#: What a worker may take after its shutdown grace: 15 s for cancelled nodes to report
#: (worker_process), 5 s for the worker to stop, 5 s to flush streams and exit.
POD_GRACE_MARGIN_SECONDS = 25
#: The pods' terminationGracePeriodSeconds is never below this (the default grace gives it).
MIN_POD_GRACE_SECONDS = 60


def termination_grace_seconds(shutdown_grace: float) -> int:
    """The worker pods' ``terminationGracePeriodSeconds`` for a worker shutdown grace:
    the kubelet must not SIGKILL a worker that is still draining."""
    return max(MIN_POD_GRACE_SECONDS, math.ceil(shutdown_grace) + POD_GRACE_MARGIN_SECONDS)
