"""S3 for payload storage: a signed client, and the storage driver history refers to.

The S3 requests are signed here (AWS Signature V4 over ``httpx``) rather than through
boto: botocore pins ``python-dateutil<3`` while the operator's ``kubernetes`` client
needs ``>=3``, so the two cannot share an environment. :class:`CompactS3Driver` is the
Temporal SDK's ``S3StorageDriver`` with a shorter reference in Event History.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import email.utils
import hashlib
import hmac
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

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
        return await self.object_age(bucket=bucket, key=key) is not None

    async def object_age(self, *, bucket: str, key: str) -> float | None:
        """Seconds since the object was last written (``HEAD``); None if there is none."""
        response = await self.request("HEAD", bucket, key)
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise S3Error("HEAD", str(response.url), response.status_code, response.content)
        try:
            written = email.utils.parsedate_to_datetime(response.headers["last-modified"])
        except (KeyError, TypeError, ValueError):
            return 0.0  # no date: as good as new
        return (datetime.datetime.now(datetime.UTC) - written).total_seconds()

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


# ----------------------------------------------------------------------------- driver


class CompactS3Driver(StorageDriver):
    """The SDK's S3 storage with a short reference in Event History.

    Why: a long run leaves up to two references per node in history (its input, the whole
    state, and its result), and the SDK driver's reference repeats the namespace, the
    workflow or activity ids and the hash in about 420 bytes; this one, ``{"b": bucket,
    "s": sha256 as base64url}``, takes about 230.

    Keys are ``v0/d/sha256/<hex>`` (after :attr:`S3Location.prefix`): one object per
    content, across runs (the SDK's activity keys are not per run either). A store uploads
    what is missing (a replay, which re-encodes every node input, finds them all) and
    what was written more than :attr:`REFRESH_SECONDS` ago, so an object outlives every
    reference by the lifecycle expiry minus that: an identical payload of a later run
    (a daily job with the same input) never points at an object about to expire. Reading
    (and its sha256 check) is the SDK driver's; references the SDK driver wrote
    (``aws.s3driver``) stay readable through it.
    """

    NAME = "deepagent.s3"
    REFRESH_SECONDS = 24 * 3600.0

    def __init__(
        self,
        client: SigV4S3Client,
        bucket: str,
        max_payload_size: int = 50 * 1024 * 1024,
    ) -> None:
        self.sdk_driver = S3StorageDriver(
            client=client, bucket=bucket, max_payload_size=max_payload_size
        )
        self._client = client
        self._bucket = bucket
        self._max_payload_size = max_payload_size

    def name(self) -> str:
        return self.NAME

    @staticmethod
    def key(hex_digest: str) -> str:
        return f"v0/d/sha256/{hex_digest}"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        async def upload(payload: Payload) -> StorageDriverClaim:
            data = payload.SerializeToString()
            if len(data) > self._max_payload_size:
                raise ValueError(
                    f"payload of {len(data)} bytes exceeds the storage driver's limit of "
                    f"{self._max_payload_size} bytes"
                )
            digest = hashlib.sha256(data).digest()
            key = self.key(digest.hex())
            try:
                age = await self._client.object_age(bucket=self._bucket, key=key)
                if age is None or age > self.REFRESH_SECONDS:
                    await self._client.put_object(bucket=self._bucket, key=key, data=data)
            except Exception as exc:
                raise RuntimeError(
                    f"payload storage failed [bucket={self._bucket}, key={key}]: {exc}"
                ) from exc
            short = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            return StorageDriverClaim(claim_data={"b": self._bucket, "s": short})

        return list(await asyncio.gather(*(upload(p) for p in payloads)))

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return await self.sdk_driver.retrieve(context, [self._sdk_claim(c) for c in claims])

    def _sdk_claim(self, claim: StorageDriverClaim) -> StorageDriverClaim:
        data = claim.claim_data
        try:
            digest = base64.urlsafe_b64decode(data["s"] + "=")
            bucket = data["b"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a {self.NAME} storage reference: {dict(data)}") from exc
        if len(digest) != hashlib.sha256().digest_size:
            raise ValueError(f"not a {self.NAME} storage reference: {dict(data)}")
        hex_digest = digest.hex()
        return StorageDriverClaim(
            claim_data={
                "bucket": bucket,
                "key": self.key(hex_digest),
                "hash_algorithm": "sha256",
                "hash_value": hex_digest,
            }
        )
