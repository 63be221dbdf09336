"""Large payloads out of Event History: Temporal external storage on S3, and compression.

A node activity's input carries the whole graph state, and the state of a long-running
agent grows by one tool output per step. Without help, Event History grows
quadratically and a state above 2 MB hits Temporal's payload limit. With payload
storage configured (``WorkerEnv.payload_s3_bucket`` and friends, see
``docs/long-runs.md``):

* every payload of ``WorkerEnv.payload_threshold_bytes`` or more goes to an S3 bucket
  through the Temporal SDK's ``ExternalStorage`` and its ``S3StorageDriver``; history
  keeps a reference of a few hundred bytes (content-addressed keys: the same bytes are
  stored once per workflow run);
* payloads of 1 KiB or more are compressed first (``zstd`` by default; measured 4-10x
  on text tool outputs, see :class:`CompressionCodec`).

The S3 requests are signed here (AWS Signature V4 over ``httpx``) rather than through
boto: botocore pins ``python-dateutil<3`` while the operator's ``kubernetes`` client
needs ``>=3``, so the two cannot share an environment. Credentials are AWS's standard
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), read
through :class:`~deepagent_temporal.contract.WorkerEnv`.

Without payload storage nothing changes, except that a payload Temporal would refuse
fails the run with ``PayloadTooLargeError`` (:mod:`deepagent_temporal.payloads`), whose
message names the fix, instead of a workflow task retried forever or a bare termination.

Every process that reads payloads (workers, clients, the gateway) needs the same
payload settings: one without them fails with ``PayloadUnreadableError``, which says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import hashlib
import hmac
import logging
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.converter import DataConverter, ExternalStorage, PayloadCodec

from deepagent_temporal.contract import EnvError, WorkerEnv
from deepagent_temporal.payloads import COMPRESSION_ENCODINGS

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


# ------------------------------------------------------------------------ S3 client


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _quote_arg(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


def _quote(path: str) -> str:
    # RFC 3986 unreserved characters stay, everything else is escaped (S3's rule for
    # the canonical URI; "/" separates segments). S3 does not escape twice.
    return urllib.parse.quote(path, safe="/-_.~")


@dataclasses.dataclass(frozen=True)
class S3Location:
    """Where payloads go: an S3 (or S3-compatible) endpoint, a bucket, a key prefix."""

    bucket: str
    region: str = "us-east-1"
    #: an S3-compatible endpoint (``http://host:port``, path-style requests); None:
    #: AWS S3 in ``region`` (virtual-hosted-style requests)
    endpoint: str | None = None
    prefix: str = ""

    def url(self, bucket: str, key: str) -> tuple[str, str, str]:
        """``(url, host, canonical path)`` of an object."""
        if self.endpoint:
            base = urllib.parse.urlsplit(self.endpoint.rstrip("/"))
            path = _quote(f"{base.path}/{bucket}/{self.prefix}{key}")
            return f"{base.scheme}://{base.netloc}{path}", base.netloc, path
        host = f"{bucket}.s3.{self.region}.amazonaws.com"
        path = _quote(f"/{self.prefix}{key}")
        return f"https://{host}{path}", host, path


class S3Error(RuntimeError):
    """An S3 request failed (the status and S3's error text are in the message)."""

    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        self.status = status
        text = body[:300].decode(errors="replace").strip()
        super().__init__(f"S3 {method} {url}: HTTP {status} {text}")


class SigV4S3Client(S3StorageDriverClient):
    """An :class:`S3StorageDriverClient` that signs its own requests (AWS Signature V4)
    and sends them with ``httpx``; keys get :attr:`S3Location.prefix`.

    One ``httpx.AsyncClient`` per event loop (workers run activities in one loop, tests
    may use several). Transient failures (connection errors, HTTP 5xx, 429) are retried
    three times; the SDK's driver wraps what still fails in a ``RuntimeError`` that
    fails the activity attempt or the workflow task, and Temporal retries those.
    """

    def __init__(
        self,
        location: S3Location,
        access_key: str | None,
        secret_key: str | None,
        session_token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.location = location
        self._access_key = access_key
        self._secret_key = secret_key
        self._session_token = session_token
        self._timeout = timeout
        self._clients: dict[int, Any] = {}

    def describe(self) -> Mapping[str, str]:
        info = {"client_region": self.location.region}
        if self.location.endpoint:
            info["endpoint"] = self.location.endpoint
        return info

    def _http(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None or client.is_closed:
            quiet = logging.getLogger("httpx")
            if quiet.level == logging.NOTSET:  # not one INFO line per payload request
                quiet.setLevel(logging.WARNING)
            client = httpx.AsyncClient(timeout=self._timeout)
            self._clients = {
                k: c for k, c in self._clients.items() if not c.is_closed and k != id(loop)
            }
            self._clients[id(loop)] = client
        return client

    def signed_headers(
        self,
        method: str,
        host: str,
        path: str,
        body: bytes,
        now: datetime.datetime | None = None,
        query: str = "",
    ) -> dict[str, str]:
        """The headers of a Signature V4 request (``Authorization`` included)."""
        now = now or datetime.datetime.now(datetime.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        if self._session_token:
            headers["x-amz-security-token"] = self._session_token
        if not (self._access_key and self._secret_key):
            return headers  # anonymous (a public or policy-open bucket)
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{n}:{headers[n].strip()}\n" for n in names),
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{day}/{self.location.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _sign(("AWS4" + self._secret_key).encode(), day)
        for part in (self.location.region, "s3", "aws4_request"):
            key = _sign(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    async def request(
        self,
        method: str,
        bucket: str,
        key: str,
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        """One signed request (retried on transient failures); returns the response."""
        import httpx

        url, host, path = self.location.url(bucket, key)
        canonical_query = "&".join(
            f"{_quote_arg(k)}={_quote_arg(v)}" for k, v in sorted((query or {}).items())
        )
        if canonical_query:
            url = f"{url}?{canonical_query}"
        delay = 0.2
        for attempt in range(4):
            headers = self.signed_headers(method, host, path, body, query=canonical_query)
            try:
                response = await self._http().request(
                    method, url, headers=headers, content=body or None
                )
            except httpx.TransportError:
                if attempt == 3:
                    raise
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                if attempt == 3:
                    raise S3Error(method, url, response.status_code, response.content)
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        response = await self.request("PUT", bucket, key, data)
        if response.status_code >= 300:
            raise S3Error("PUT", str(response.url), response.status_code, response.content)

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        response = await self.request("HEAD", bucket, key)
        if response.status_code == 404:
            return False
        if response.status_code >= 300:
            raise S3Error("HEAD", str(response.url), response.status_code, response.content)
        return True

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        response = await self.request("GET", bucket, key)
        if response.status_code >= 300:
            raise S3Error("GET", str(response.url), response.status_code, response.content)
        return response.content

    async def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """``(objects, bytes)`` under ``prefix`` (after :attr:`S3Location.prefix`); for
        sizing a bucket (``ListObjectsV2``, needs ``s3:ListBucket``)."""
        import re

        objects = size = 0
        token = None
        while True:
            query = {"list-type": "2", "prefix": self.location.prefix + prefix}
            if token:
                query["continuation-token"] = token
            response = await self.request("GET", bucket, "", query=query)
            if response.status_code >= 300:
                raise S3Error("GET", str(response.url), response.status_code, response.content)
            sizes = re.findall(r"<Size>(\d+)</Size>", response.text)
            objects += len(sizes)
            size += sum(int(n) for n in sizes)
            found = re.search(
                r"<NextContinuationToken>([^<]+)</NextContinuationToken>", response.text
            )
            if not found:
                return objects, size
            token = found.group(1)

    async def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` if it does not exist (tests and local setups; the driver
        never creates one)."""
        response = await self.request("PUT", bucket, "")
        if response.status_code >= 300 and b"BucketAlreadyOwnedByYou" not in response.content:
            raise S3Error("PUT", str(response.url), response.status_code, response.content)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


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
        driver = S3StorageDriver(client=self.s3_client(), bucket=self.location.bucket)
        return ExternalStorage(drivers=[driver], payload_size_threshold=self.threshold_bytes)


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
