"""Large payloads out of Event History: Temporal external storage on S3, and compression.

A node activity's input carries the whole graph state, and the state of a long-running
agent grows by one tool output per step. Without help, Event History grows
quadratically and a state above 2 MB hits Temporal's payload limit. With payload
storage configured (``WorkerEnv.payload_s3_bucket`` and friends, see
``docs/long-runs.md``):

* every payload of ``WorkerEnv.payload_threshold_bytes`` or more goes to an S3 bucket
  through the Temporal SDK's ``ExternalStorage`` (:class:`CompactS3Driver`: the SDK's
  ``S3StorageDriver`` with a shorter reference); history keeps a reference of about 230
  bytes (content-addressed keys);
* payloads of 1 KiB or more are compressed first (``zstd`` by default; measured 4-10x
  on text tool outputs, see :class:`CompressionCodec`).

The S3 side (a signed client, the driver) is :mod:`deepagent_temporal.s3`. Credentials are
AWS's standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``),
read through :class:`~deepagent_temporal.contract.WorkerEnv`.

Without payload storage nothing changes, except that a payload Temporal would refuse
fails the run with ``PayloadTooLargeError`` (:mod:`deepagent_temporal.payloads`), whose
message names the fix, instead of a workflow task retried forever or a bare termination.

Every process that reads payloads (workers, clients, the gateway) needs the same
payload settings: one without them fails with ``PayloadUnreadableError``, which says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import zlib
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, ExternalStorage, PayloadCodec

from deepagent_temporal.contract import EnvError, WorkerEnv
from deepagent_temporal.payloads import COMPRESSION_ENCODINGS
from deepagent_temporal.s3 import CompactS3Driver, S3Location, SigV4S3Client

#: payloads smaller than this are never compressed (readable in the UI; no gain)
COMPRESS_MIN_BYTES = 1024
#: compress payloads this large on a thread (the event loop keeps serving heartbeats)
_COMPRESS_OFF_LOOP_BYTES = 256 * 1024
_ALGORITHMS = {v: k for k, v in COMPRESSION_ENCODINGS.items()}


# ----------------------------------------------------------------------- compression


def _compress(algorithm: str, data: bytes) -> bytes:
    if algorithm == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return zlib.compress(data, 6)


def _decompress(algorithm: str, data: bytes) -> bytes:
    if algorithm == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data)
    return zlib.decompress(data)


class CompressionCodec(PayloadCodec):
    """Compresses payloads of :data:`COMPRESS_MIN_BYTES` or more (when it makes them
    smaller) with ``zstd`` or ``zlib``; decodes both whatever ``algorithm`` is.

    The compressed payload wraps the whole original payload (metadata included), with
    the encoding ``binary/deepagent-zstd`` (or ``-zlib``).
    """

    def __init__(self, algorithm: str | None = "zstd") -> None:
        if algorithm in ("", "none"):
            algorithm = None
        if algorithm is not None and algorithm not in COMPRESSION_ENCODINGS:
            raise ValueError(f"unknown compression {algorithm!r}: zstd, zlib or none")
        self.algorithm = algorithm

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._encode_one(p) for p in payloads]

    async def _encode_one(self, payload: Payload) -> Payload:
        algorithm = self.algorithm
        if algorithm is None or payload.ByteSize() < COMPRESS_MIN_BYTES:
            return payload
        raw = payload.SerializeToString()
        if len(raw) >= _COMPRESS_OFF_LOOP_BYTES:
            data = await asyncio.to_thread(_compress, algorithm, raw)
        else:
            data = _compress(algorithm, raw)
        if len(data) >= len(raw):
            return payload
        return Payload(metadata={"encoding": COMPRESSION_ENCODINGS[algorithm]}, data=data)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            algorithm = _ALGORITHMS.get(payload.metadata.get("encoding", b""))
            if algorithm is None:
                out.append(payload)
                continue
            if len(payload.data) >= _COMPRESS_OFF_LOOP_BYTES // 4:
                raw = await asyncio.to_thread(_decompress, algorithm, payload.data)
            else:
                raw = _decompress(algorithm, payload.data)
            original = Payload()
            original.ParseFromString(raw)
            out.append(original)
        return out


# --------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class PayloadStorage:
    """Payload storage settings (from :class:`WorkerEnv`, see :meth:`from_env`)."""

    location: S3Location | None
    threshold_bytes: int = 16 * 1024
    compression: str | None = None
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: WorkerEnv | None = None) -> PayloadStorage:
        env = env or WorkerEnv.from_env()
        location = None
        if env.payload_s3_bucket:
            location = S3Location(
                bucket=env.payload_s3_bucket,
                region=env.payload_s3_region,
                endpoint=env.payload_s3_endpoint or None,
                prefix=env.payload_s3_prefix or "",
            )
        compression = env.payload_compression
        if compression not in (None, "none", *COMPRESSION_ENCODINGS):
            raise EnvError(
                f"{WorkerEnv.name('payload_compression')}={compression!r} is not one of "
                f"zstd, zlib, none"
            )
        if compression is None:  # unset: compress what goes to the bucket
            compression = "zstd" if location else None
        elif compression == "none":
            compression = None
        return cls(
            location=location,
            threshold_bytes=env.payload_threshold_bytes,
            compression=compression,
            access_key=env.aws_access_key_id,
            secret_key=env.aws_secret_access_key,
            session_token=env.aws_session_token,
        )

    @property
    def configured(self) -> bool:
        """Whether anything changes the data converter (a bucket or compression)."""
        return self.location is not None or self.compression is not None

    def s3_client(self) -> SigV4S3Client:
        if self.location is None:
            raise ValueError("no payload bucket configured")
        return SigV4S3Client(self.location, self.access_key, self.secret_key, self.session_token)

    def external_storage(self) -> ExternalStorage | None:
        if self.location is None:
            return None
        driver = CompactS3Driver(self.s3_client(), self.location.bucket)
        return ExternalStorage(
            drivers=[driver, driver.sdk_driver],  # the SDK's: to read its references
            driver_selector=lambda _context, _payload: driver,
            payload_size_threshold=self.threshold_bytes,
        )


@functools.cache
def _unchecked(converter_class: type) -> type:
    """``converter_class`` without the payload size check (large payloads are stored)."""
    return type(converter_class.__name__, (converter_class,), {"size_limit": None})


def apply(data_converter: DataConverter, storage: PayloadStorage | None = None) -> DataConverter:
    """``data_converter`` with the payload storage and compression of ``storage`` (default:
    the environment's); unchanged when neither is configured or it has storage already."""
    storage = storage or PayloadStorage.from_env()
    if not storage.configured or data_converter.external_storage is not None:
        return data_converter
    changes: dict[str, Any] = {}
    if storage.compression is not None or storage.location is not None:
        if data_converter.payload_codec is None:
            changes["payload_codec"] = CompressionCodec(storage.compression)
    external = storage.external_storage()
    if external is not None:
        changes["external_storage"] = external
        changes["payload_converter_class"] = _unchecked(data_converter.payload_converter_class)
    if not changes:
        return data_converter
    return dataclasses.replace(data_converter, **changes)


def wanted(data_converter: Any) -> bool:
    """Whether :func:`apply` would change ``data_converter`` (storage configured, absent)."""
    if data_converter is None:
        return PayloadStorage.from_env().configured
    return apply(data_converter) is not data_converter
