"""What a payload may be: Temporal's size limit, and what a process can read.

Two failures would otherwise reach users as Temporal internals:

* a payload over Temporal's limit (a workflow task retried forever, or a bare
  termination) becomes :class:`PayloadTooLargeError`;
* a payload written by a process with payload storage (stored in S3, or compressed)
  and read by one without it (the SDK's ``RuntimeError: [TMPRL1105] ...`` or
  ``KeyError: Unknown payload encoding ...``) becomes :class:`PayloadUnreadableError`.

Both messages name the fix: the payload storage settings of ``docs/long-runs.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.sdk.v1.external_storage_pb2 import ExternalStorageReference
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from deepagent_temporal.contract import WorkerEnv

#: Temporal's payload size limit (the server's blob size error limit, 2 MB by default):
#: a larger activity input or result, workflow input or continue-as-new input is refused
TEMPORAL_PAYLOAD_LIMIT = 2 * 1024 * 1024
#: what the rest of a request around the payloads may take (headers, other fields)
_HEADROOM = 16 * 1024

#: encodings of the compression codec (``deepagent_temporal.storage.CompressionCodec``)
COMPRESSION_ENCODINGS = {"zstd": b"binary/deepagent-zstd", "zlib": b"binary/deepagent-zlib"}

# How the Temporal SDK's ExternalStorage marks a reference to a stored payload: the
# current protobuf form, the legacy JSON form, and the marker key of encoded references.
_REFERENCE_MESSAGE_TYPE = ExternalStorageReference.DESCRIPTOR.full_name.encode()
_REFERENCE_ENCODING = b"json/external-storage-reference"
_REFERENCE_MARKER_KEY = "__temporal_external_storage_reference"


def storage_variables() -> str:
    """The variables that configure payload storage, for messages."""
    fields = ("payload_s3_bucket", "payload_s3_endpoint", "payload_s3_region")
    return ", ".join(WorkerEnv.name(f) for f in fields)


class PayloadTooLargeError(ApplicationError):
    """A payload would pass Temporal's payload limit and no payload storage is configured.

    Non-retryable: the same state is as large on every attempt. The message says what
    was too large and how to fix it (configure payload storage).
    """

    def __init__(self, size: int, limit: int, what: str = "a payload") -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"{what} of {size / 1e6:.2f} MB would pass Temporal's payload limit of "
            f"{limit / 1e6:.2f} MB (the graph state, carried by every node activity, grows "
            f"with the run): configure payload storage so that large payloads go to S3 "
            f"instead of Event History: set {storage_variables()} (and AWS credentials) on "
            f"the workers and clients, or spec.payloadStorage of the DeepAgent resource; "
            f"see docs/long-runs.md",
            type="PayloadTooLargeError",
            non_retryable=True,
        )


def check_payload_size(
    payloads: Sequence[Payload], limit: int = TEMPORAL_PAYLOAD_LIMIT, what: str = "a payload"
) -> None:
    """Raise :class:`PayloadTooLargeError` if ``payloads`` would not fit Temporal's limit."""
    size = sum(p.ByteSize() for p in payloads)
    if size > limit - _HEADROOM:
        raise PayloadTooLargeError(size, limit, what)


class PayloadUnreadableError(ApplicationError):
    """A payload needs payload storage settings that this process does not have.

    Retryable: on a worker, a rollout with the settings fixes it (the run waits instead
    of failing). A client gets it raised from the call that read the payload.
    """

    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__(
            f"a payload was {how} by a process with payload storage, and this process has "
            f"none: set the same payload storage settings as the workers ({storage_variables()}, "
            f"AWS credentials, and the compression if set) on every process that reads runs "
            f"(workers, clients, the gateway), or spec.payloadStorage of the DeepAgent "
            f"resource; see docs/long-runs.md",
            type="PayloadUnreadableError",
        )


def _how_written(payload: Payload) -> str | None:
    """``"stored in S3"`` / ``"compressed (zstd)"`` when ``payload`` needs payload storage
    to be read; ``None`` for a plain payload."""
    meta = payload.metadata
    encoding = meta.get("encoding", b"")
    if (
        encoding == _REFERENCE_ENCODING
        or meta.get(_REFERENCE_MARKER_KEY) == b"true"
        or (encoding == b"json/protobuf" and meta.get("messageType") == _REFERENCE_MESSAGE_TYPE)
    ):
        return "stored in external storage (S3)"
    for algorithm, compressed in COMPRESSION_ENCODINGS.items():
        if encoding == compressed:
            return f"compressed ({algorithm})"
    return None


def check_readable(payloads: Sequence[Payload]) -> None:
    """Raise :class:`PayloadUnreadableError` if a payload needs payload storage to be read.

    Called by the payload converter, which only ever sees payloads the codec and the
    external storage left as they were: so this fires exactly when those are missing.
    """
    for payload in payloads:
        how = _how_written(payload)
        if how is not None:
            raise PayloadUnreadableError(how)


#: the Temporal SDK's error code for a stored payload read without external storage
_SDK_NO_EXTERNAL_STORAGE = "[TMPRL1105]"


@dataclasses.dataclass(frozen=True)
class ReadableDataConverter(DataConverter):
    """A ``DataConverter`` whose ``decode`` raises :class:`PayloadUnreadableError` for a
    payload stored in S3 while this process has no external storage (the SDK's own error
    does not say which settings are missing)."""

    async def decode(self, payloads: Sequence[Payload], type_hints: Any = None) -> list[Any]:
        try:
            return await super().decode(payloads, type_hints)
        except RuntimeError as exc:
            if not str(exc).startswith(_SDK_NO_EXTERNAL_STORAGE):
                raise
            raise PayloadUnreadableError("stored in external storage (S3)") from exc


def readable(data_converter: DataConverter) -> ReadableDataConverter:
    """``data_converter`` as a :class:`ReadableDataConverter` (itself if it is one)."""
    if isinstance(data_converter, ReadableDataConverter):
        return data_converter
    fields = {f.name: getattr(data_converter, f.name) for f in dataclasses.fields(data_converter)}
    init = {f.name for f in dataclasses.fields(data_converter) if f.init}
    return ReadableDataConverter(**{k: v for k, v in fields.items() if k in init})
