"""The worker environment: every variable a worker reads, with type, default and doc."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------------------------
# Worker environment
# ------------------------------------------------------------------------------------


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _parse_bool,
}


def _var(
    name: str,
    kind: str,
    default: Any,
    doc: str,
    *,
    secret: bool = False,
    deprecated_names: tuple[str, ...] = (),
) -> Any:
    return field(
        default=default,
        metadata={
            "env": name,
            "kind": kind,
            "doc": doc,
            "secret": secret,
            "deprecated_names": deprecated_names,
        },
    )


class EnvError(ValueError):
    """A worker environment variable has a value that cannot be used."""


@dataclass(frozen=True)
class EnvVar:
    """One documented variable of the worker environment."""

    field: str
    name: str
    kind: str
    default: Any
    doc: str
    secret: bool
    deprecated_names: tuple[str, ...]


@dataclass(frozen=True)
class WorkerEnv:
    """Every environment variable a worker (``deepagent-temporal worker``) reads.

    The operator renders a worker pod's env from it (:meth:`to_env`), the CLI reads its
    defaults through it (:meth:`from_env`), and the tables in ``docs/architecture.md`` and
    ``deepagent-temporal worker --help`` are generated from it (:meth:`markdown_table`).
    """

    graph: str | None = _var(
        "DEEPAGENT_GRAPH",
        "str",
        None,
        "Graphs to serve: `package.module:attribute` of a compiled graph or a zero-argument "
        "factory; several separated by commas. Required.",
    )
    temporal_address: str = _var(
        "TEMPORAL_ADDRESS", "str", "localhost:7233", "Temporal frontend `host:port`."
    )
    temporal_namespace: str = _var("TEMPORAL_NAMESPACE", "str", "default", "Temporal namespace.")
    temporal_task_queue: str | None = _var(
        "TEMPORAL_TASK_QUEUE", "str", None, "Task queue the worker polls. Required."
    )
    temporal_api_key: str | None = _var(
        "TEMPORAL_API_KEY",
        "str",
        None,
        "API key (e.g. Temporal Cloud); turns TLS on.",
        secret=True,
    )
    temporal_tls_cert: str | None = _var(
        "TEMPORAL_TLS_CERT", "str", None, "Path of the client certificate (mTLS)."
    )
    temporal_tls_key: str | None = _var(
        "TEMPORAL_TLS_KEY", "str", None, "Path of the client private key (mTLS)."
    )
    temporal_tls_ca: str | None = _var(
        "TEMPORAL_TLS_CA", "str", None, "Path of the server CA certificate."
    )
    token_streaming: bool = _var(
        "DEEPAGENT_TOKEN_STREAMING",
        "bool",
        True,
        "Capture LLM tokens and stream them (Redis path if REDIS_URL is set, else Temporal).",
    )
    redis_password: str | None = _var(
        "REDIS_PASSWORD",
        "str",
        None,
        "Not read by the worker: the operator sets it from the Managed Redis Secret so that "
        "REDIS_URL can say `$(REDIS_PASSWORD)` (Kubernetes expands it).",
        secret=True,
    )
    redis_url: str | None = _var(
        "REDIS_URL",
        "str",
        None,
        "Redis for the Redis path (`redis://[:password@]host:port/db`). Unset: tokens take "
        "the Temporal path.",
        secret=True,
    )
    stream_maxlen: int = _var(
        "DEEPAGENT_STREAM_MAXLEN", "int", 10000, "Entries kept per run stream (`XADD MAXLEN ~`)."
    )
    stream_ttl_seconds: int = _var(
        "DEEPAGENT_STREAM_TTL_SECONDS",
        "int",
        3600,
        "Seconds a run stream lives after its last write (sliding `EXPIRE`).",
    )
    health_port: int | None = _var(
        "DEEPAGENT_HEALTH_PORT",
        "int",
        None,
        "Port of /healthz, /readyz and /metrics (the image sets 8080). Unset: no server.",
    )
    health_host: str = _var(
        "DEEPAGENT_HEALTH_HOST",
        "str",
        "0.0.0.0",
        "Address the health server binds (pods: all interfaces; local runs: 127.0.0.1).",
    )
    connect_timeout: float = _var(
        "DEEPAGENT_CONNECT_TIMEOUT",
        "float",
        10.0,
        "Seconds to wait for the Temporal server at start-up before exiting with code 3.",
    )
    shutdown_grace_seconds: float = _var(
        "DEEPAGENT_SHUTDOWN_GRACE_SECONDS",
        "float",
        30.0,
        "Seconds running activities may finish after SIGTERM.",
    )
    heartbeat_timeout_seconds: float = _var(
        "DEEPAGENT_HEARTBEAT_TIMEOUT_SECONDS",
        "float",
        30.0,
        "Node activities heartbeat; a worker that dies mid-node is detected after this long "
        "and the node is retried elsewhere.",
    )
    temporal_batch_ms: float = _var(
        "DEEPAGENT_TEMPORAL_BATCH_MS",
        "float",
        50.0,
        "Batching interval of tokens on the Temporal path (latency against history size).",
        deprecated_names=("DEEPAGENT_PHASE1_BATCH_MS",),
    )
    history_max_bytes: int = _var(
        "DEEPAGENT_HISTORY_MAX_BYTES",
        "int",
        10_000_000,
        "A run continues as new (same thread, same streams) once its Event History passes "
        "this size, well under Temporal's 50 MB limit; also when Temporal suggests it.",
    )
    history_max_events: int = _var(
        "DEEPAGENT_HISTORY_MAX_EVENTS",
        "int",
        10_000,
        "... or once its Event History has this many events (Temporal's limit: 51,200).",
    )
    payload_s3_bucket: str | None = _var(
        "DEEPAGENT_PAYLOAD_S3_BUCKET",
        "str",
        None,
        "Payload storage: S3 bucket (it must exist) for payloads of "
        "DEEPAGENT_PAYLOAD_THRESHOLD_BYTES or more, so that Event History keeps a reference "
        "(Temporal external storage). Needed once a run's state nears Temporal's 2 MB payload "
        "limit. Clients need the same payload settings. Unset: payloads stay in history, and "
        "a state over the limit fails the run with a message saying so.",
    )
    payload_s3_endpoint: str | None = _var(
        "DEEPAGENT_PAYLOAD_S3_ENDPOINT",
        "str",
        None,
        "Payload storage: URL of an S3-compatible endpoint (`http://host:port`, path-style "
        "requests). Unset: AWS S3 in DEEPAGENT_PAYLOAD_S3_REGION.",
    )
    payload_s3_region: str = _var(
        "DEEPAGENT_PAYLOAD_S3_REGION", "str", "us-east-1", "Payload storage: the bucket's region."
    )
    payload_s3_prefix: str | None = _var(
        "DEEPAGENT_PAYLOAD_S3_PREFIX",
        "str",
        None,
        "Payload storage: prefix of the object keys (e.g. `deepagent/`); keep it as long as "
        "stored payloads are read (their references omit it).",
    )
    payload_threshold_bytes: int = _var(
        "DEEPAGENT_PAYLOAD_THRESHOLD_BYTES",
        "int",
        16384,
        "Payload storage: payloads of this size or more (after compression) go to the bucket.",
    )
    payload_compression: str | None = _var(
        "DEEPAGENT_PAYLOAD_COMPRESSION",
        "str",
        None,
        "Compression of payloads of 1 KiB or more: `zstd`, `zlib` or `none`. Unset: `zstd` "
        "when a payload bucket is set, else `none`. Clients need the same setting.",
    )
    aws_access_key_id: str | None = _var(
        "AWS_ACCESS_KEY_ID",
        "str",
        None,
        "Payload storage credentials: AWS's standard variable (not ours to name; the operator "
        "sets it from spec.payloadStorage's credentials Secret). Unset: unsigned requests.",
        secret=True,
    )
    aws_secret_access_key: str | None = _var(
        "AWS_SECRET_ACCESS_KEY",
        "str",
        None,
        "Payload storage credentials: AWS's standard variable, with AWS_ACCESS_KEY_ID.",
        secret=True,
    )
    aws_session_token: str | None = _var(
        "AWS_SESSION_TOKEN",
        "str",
        None,
        "Payload storage credentials: AWS's standard variable, for temporary credentials.",
        secret=True,
    )
    gateway_port: int = _var(
        "DEEPAGENT_GATEWAY_PORT",
        "int",
        2024,
        "`deepagent-temporal serve`: port of the HTTP/SSE gateway (the LangGraph Agent "
        "Server protocol; 2024 like `langgraph dev`). Not read by workers.",
    )
    gateway_host: str = _var(
        "DEEPAGENT_GATEWAY_HOST",
        "str",
        "0.0.0.0",
        "`deepagent-temporal serve`: address the gateway binds (pods: all interfaces; "
        "local runs: 127.0.0.1).",
    )
    gateway_api_keys_file: str | None = _var(
        "DEEPAGENT_GATEWAY_API_KEYS_FILE",
        "str",
        None,
        "`deepagent-temporal serve`: file of API keys, one a line (`#` comments); a request "
        "must send one in `x-api-key`. Unset: no auth (a warning is logged).",
    )
    allowed_types: str | None = _var(
        "DEEPAGENT_ALLOWED_TYPES",
        "str",
        None,
        "Extra types payloads may carry, `package.module:Class` separated by commas (your "
        "state's pydantic models, dataclasses, enums). Everything else is refused: a payload "
        "never imports or calls what it names.",
    )
    log_level: str = _var("DEEPAGENT_LOG_LEVEL", "str", "INFO", "Python log level.")
    no_hard_exit: bool = _var(
        "DEEPAGENT_NO_HARD_EXIT",
        "bool",
        False,
        "Let the CLI return through the interpreter instead of `os._exit` after flushing "
        "(embedding, debugging).",
    )

    # -- introspection -------------------------------------------------------------

    @classmethod
    def variables(cls) -> list[EnvVar]:
        """Every variable, in declaration order."""
        return [
            EnvVar(
                field=f.name,
                name=f.metadata["env"],
                kind=f.metadata["kind"],
                default=f.default,
                doc=f.metadata["doc"],
                secret=f.metadata["secret"],
                deprecated_names=f.metadata["deprecated_names"],
            )
            for f in dataclasses.fields(cls)
        ]

    @classmethod
    def name(cls, field_name: str) -> str:
        """The variable name of a field: ``WorkerEnv.name("redis_url") == "REDIS_URL"``."""
        for var in cls.variables():
            if var.field == field_name:
                return var.name
        raise KeyError(f"WorkerEnv has no field {field_name!r}")

    # -- conversions ---------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv:
        """Read the variables (empty means unset); :class:`EnvError` names a bad value."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in cls.variables():
            raw = None
            for name in (var.name, *var.deprecated_names):
                if environ.get(name, "") != "":
                    raw = environ[name]
                    break
            if raw is None:
                continue
            try:
                values[var.field] = _PARSERS[var.kind](raw)
            except ValueError as exc:
                raise EnvError(f"{var.name}={raw!r} is not a valid {var.kind} ({exc})") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """Every variable that has a value (defaults included), in declaration order."""
        return self.render(**{var.field: getattr(self, var.field) for var in self.variables()})

    @classmethod
    def render(cls, **values: Any) -> dict[str, str]:
        """Exactly the given fields (None skipped) as variables, in declaration order.

        ``WorkerEnv.render(graph="pkg.mod:agent", token_streaming=False)`` is
        ``{"DEEPAGENT_GRAPH": "pkg.mod:agent", "DEEPAGENT_TOKEN_STREAMING": "false"}``:
        the operator and the local worker launcher set what they mean and nothing else.
        """
        known = {var.field for var in cls.variables()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"WorkerEnv has no field(s) {unknown}")
        out: dict[str, str] = {}
        for var in cls.variables():
            value = values.get(var.field)
            if value is not None:
                out[var.name] = _show(value)
        return out

    # -- documentation -------------------------------------------------------------

    @classmethod
    def markdown_table(cls) -> str:
        """The env table of ``docs/architecture.md`` (drift-tested)."""
        rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
        for var in cls.variables():
            default = "" if var.default is None else f"`{_show(var.default)}`"
            doc = var.doc
            if var.deprecated_names:
                doc += " Old name, still read: " + ", ".join(f"`{n}`" for n in var.deprecated_names)
            rows.append(f"| `{var.name}` | {var.kind} | {default} | {doc} |")
        return "\n".join(rows) + "\n"

    @classmethod
    def help_text(cls) -> str:
        """The environment section of ``deepagent-temporal worker --help``."""
        lines = ["environment (flags override):"]
        for var in cls.variables():
            default = "" if var.default is None else f" [default: {_show(var.default)}]"
            lines.append(f"  {var.name}{default}")
            lines.append(f"      {var.doc.replace('`', '')}")
        return "\n".join(lines)

    def __repr__(self) -> str:  # secrets never reach logs
        parts = []
        for var in self.variables():
            value = getattr(self, var.field)
            shown = "***" if var.secret and value is not None else repr(value)
            parts.append(f"{var.field}={shown}")
        return f"WorkerEnv({', '.join(parts)})"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def iter_env_names() -> Iterator[str]:
    """Every worker variable name, deprecated ones included (for the literal scan test)."""
    for var in WorkerEnv.variables():
        yield var.name
        yield from var.deprecated_names


ENV_TABLE_START = "<!-- worker-env:start (generated from WorkerEnv; do not edit) -->"
ENV_TABLE_END = "<!-- worker-env:end -->"


def with_env_table(text: str) -> str:
    """``text`` with the generated env table between its markers (for the docs)."""
    head, start, rest = text.partition(ENV_TABLE_START)
    _, end, tail = rest.partition(ENV_TABLE_END)
    if not start or not end:
        raise ValueError(f"markers not found: {ENV_TABLE_START} ... {ENV_TABLE_END}")
    return f"{head}{ENV_TABLE_START}\n{WorkerEnv.markdown_table()}{ENV_TABLE_END}{tail}"
