"""Payload storage settings, the compression codec, the S3 driver and client, and the
payload size guard (no server: the S3 round trips are in
tests/integration/test_payload_storage.py, on SeaweedFS)."""

from __future__ import annotations

import hashlib
import time
from unittest import mock

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.sdk.v1.external_storage_pb2 import ExternalStorageReference
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.converter import ExternalStorage, JSONProtoPayloadConverter, StorageDriverClaim

from deepagent_temporal import payloads, storage
from deepagent_temporal.contract import EnvError, WorkerEnv
from deepagent_temporal.converter import DeepAgentPayloadConverter, data_converter
from deepagent_temporal.s3 import CompactS3Driver, S3Location, SigV4S3Client

BUCKET = {WorkerEnv.name("payload_s3_bucket"): "payloads"}


def _payload(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"binary/langgraph-msgpack"}, data=data)


@pytest.mark.parametrize("algorithm", ["zstd", "zlib"])
async def test_the_codec_round_trips_and_skips_what_does_not_pay(algorithm):
    codec = storage.CompressionCodec(algorithm)
    text = b"the quick brown fox jumps over the lazy dog " * 200
    small, big, noise = _payload(b"tiny"), _payload(text), _payload(bytes(range(256)) * 8)
    encoded = await codec.encode([small, big])
    assert encoded[0] == small, "under 1 KiB: left alone"
    assert encoded[1].metadata["encoding"] == f"binary/deepagent-{algorithm}".encode()
    assert encoded[1].ByteSize() < big.ByteSize() / 10
    assert await codec.decode(encoded) == [small, big]
    # a codec that does not compress still decodes what another process compressed
    assert await storage.CompressionCodec(None).decode(encoded) == [small, big]
    [kept] = await codec.encode([noise])
    assert kept == noise or kept.ByteSize() < noise.ByteSize()


def test_unknown_compression_is_refused():
    with pytest.raises(ValueError):
        storage.CompressionCodec("lz4")
    with pytest.raises(EnvError, match=WorkerEnv.name("payload_compression")):
        storage.PayloadStorage.from_env(
            WorkerEnv.from_env({WorkerEnv.name("payload_compression"): "lz4"})
        )


def test_nothing_is_configured_by_default_and_the_converter_is_unchanged():
    settings = storage.PayloadStorage.from_env(WorkerEnv.from_env({}))
    assert not settings.configured and settings.external_storage() is None
    assert storage.apply(data_converter, settings) is data_converter


def test_a_bucket_brings_external_storage_zstd_and_no_size_guard():
    env = WorkerEnv.from_env(
        {
            **BUCKET,
            WorkerEnv.name("payload_s3_endpoint"): "http://127.0.0.1:9000",
            WorkerEnv.name("payload_threshold_bytes"): "4096",
            WorkerEnv.name("aws_access_key_id"): "AK",
            WorkerEnv.name("aws_secret_access_key"): "SK",
        }
    )
    settings = storage.PayloadStorage.from_env(env)
    assert settings.compression == "zstd" and settings.location.bucket == "payloads"
    assert "SK" not in repr(settings)
    converter = storage.apply(data_converter, settings)
    assert converter.external_storage.payload_size_threshold == 4096
    assert isinstance(converter.payload_codec, storage.CompressionCodec)
    assert issubclass(converter.payload_converter_class, DeepAgentPayloadConverter)
    assert converter.payload_converter_class.size_limit is None
    assert storage.apply(converter, settings) is converter, "idempotent"


def test_compression_alone_is_possible_and_none_turns_it_off():
    alone = storage.PayloadStorage.from_env(
        WorkerEnv.from_env({WorkerEnv.name("payload_compression"): "zlib"})
    )
    converter = storage.apply(data_converter, alone)
    assert converter.external_storage is None and converter.payload_codec.algorithm == "zlib"
    assert converter.payload_converter_class.size_limit, "no storage: the guard stays"
    off = storage.PayloadStorage.from_env(
        WorkerEnv.from_env({**BUCKET, WorkerEnv.name("payload_compression"): "none"})
    )
    assert off.compression is None and off.location is not None


def test_a_payload_over_the_limit_names_the_fix():
    conv = data_converter.payload_converter
    assert len(conv.to_payloads([{"notes": ["x" * 1_000_000]}])[0].data) > 1_000_000
    with pytest.raises(payloads.PayloadTooLargeError) as refused:
        conv.to_payloads([{"notes": ["x" * 2_200_000]}])
    err = refused.value
    assert err.non_retryable and err.type == "PayloadTooLargeError"
    for name in ("payload_s3_bucket", "payload_s3_endpoint"):
        assert WorkerEnv.name(name) in err.message
    assert "spec.payloadStorage" in err.message and "docs/long-runs.md" in err.message


async def test_a_process_without_storage_names_the_fix_for_stored_or_compressed_payloads():
    """A client or worker that lacks the workers' payload settings gets an error that says
    which settings, not "Unknown payload encoding" or a JSON error on a reference."""
    conv = data_converter.payload_converter
    [plain] = conv.to_payloads([{"notes": ["x" * 4000]}])
    [compressed] = await storage.CompressionCodec("zstd").encode([plain])
    reference = JSONProtoPayloadConverter().to_payload(
        ExternalStorageReference(driver_name="aws.s3driver")
    )
    assert (
        reference.metadata["messageType"] == ExternalStorageReference.DESCRIPTOR.full_name.encode()
    )
    legacy = Payload(metadata={"encoding": b"json/external-storage-reference"}, data=b"{}")
    for payload, how in ((compressed, "compressed (zstd)"), (reference, "S3"), (legacy, "S3")):
        with pytest.raises(payloads.PayloadUnreadableError) as refused:
            conv.from_payloads([plain, payload])
        err = refused.value
        assert how in err.message and not err.non_retryable
        assert WorkerEnv.name("payload_s3_bucket") in err.message
        assert "spec.payloadStorage" in err.message
    assert conv.from_payloads([plain]) == [{"notes": ["x" * 4000]}]


class MemoryS3(S3StorageDriverClient):
    """A bucket in a dict, counting requests (the real round trips run on SeaweedFS)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.written: dict[tuple[str, str], float] = {}
        self.requests: list[str] = []

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        self.requests.append("PUT")
        self.objects[bucket, key] = data
        self.written[bucket, key] = time.time()

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        return await self.object_age(bucket=bucket, key=key) is not None

    async def object_age(self, *, bucket: str, key: str) -> float | None:
        self.requests.append("HEAD")
        if (bucket, key) not in self.objects:
            return None
        return time.time() - self.written[bucket, key]

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        self.requests.append("GET")
        return self.objects[bucket, key]


def _storage_on(client: S3StorageDriverClient) -> ExternalStorage:
    settings = storage.PayloadStorage.from_env(WorkerEnv.from_env(BUCKET))
    with mock.patch.object(storage.PayloadStorage, "s3_client", lambda _self: client):
        return settings.external_storage()


async def test_references_are_short_and_read_back_through_the_sdk_driver():
    s3 = MemoryS3()
    external = _storage_on(s3)
    big = _payload(b"state " * 10_000)
    [ref] = await external._store_payload_sequence([big])
    claim = JSONProtoPayloadConverter().from_payload(ref, ExternalStorageReference)
    assert claim.driver_name == CompactS3Driver.NAME
    assert set(claim.claim_data) == {"b", "s"} and claim.claim_data["b"] == "payloads"
    assert ref.ByteSize() < 260  # the SDK driver's reference: about 420 bytes
    digest = hashlib.sha256(big.SerializeToString()).hexdigest()
    assert ("payloads", f"v0/d/sha256/{digest}") in s3.objects
    [back] = await external._retrieve_payload_sequence([ref])
    assert back == big
    # the same content again (a replay re-encodes every input): found, not uploaded
    await external._store_payload_sequence([big])
    assert s3.requests == ["HEAD", "PUT", "GET", "HEAD"]
    # ... unless it was written more than a day ago: then it is written anew, so that
    # a later run's reference never points at an object about to expire
    s3.written[next(iter(s3.written))] -= CompactS3Driver.REFRESH_SECONDS + 1
    s3.requests.clear()
    await external._store_payload_sequence([big])
    assert s3.requests == ["HEAD", "PUT"]


async def test_references_the_sdk_driver_wrote_stay_readable():
    s3 = MemoryS3()
    sdk = ExternalStorage(drivers=[S3StorageDriver(client=s3, bucket="payloads")])
    big = _payload(b"older run " * 10_000)
    [ref] = await sdk._store_payload_sequence([big])
    assert (await _storage_on(s3)._retrieve_payload_sequence([ref])) == [big]


async def test_a_changed_object_or_a_forged_reference_is_refused():
    s3 = MemoryS3()
    external = _storage_on(s3)
    [ref] = await external._store_payload_sequence([_payload(b"state " * 10_000)])
    [key] = s3.objects
    s3.objects[key] = _payload(b"other").SerializeToString()
    with pytest.raises(ValueError, match="integrity check failed"):
        await external._retrieve_payload_sequence([ref])
    driver = external.drivers[0]
    for forged in ({"b": "payloads"}, {"b": "payloads", "s": "c2hvcnQ"}, {"s": 3}):
        with pytest.raises(ValueError, match="not a deepagent.s3 storage reference"):
            await driver.retrieve(None, [StorageDriverClaim(claim_data=forged)])


def test_object_urls_path_style_with_an_endpoint_else_virtual_hosted():
    local = S3Location("b", endpoint="http://127.0.0.1:9000/", prefix="p/")
    assert local.url("b", "v0/wi/a%3Ab") == (
        "http://127.0.0.1:9000/b/p/v0/wi/a%253Ab",
        "127.0.0.1:9000",
        "/b/p/v0/wi/a%253Ab",
    )
    aws = S3Location("b", region="eu-west-1")
    assert aws.url("b", "k")[0] == "https://b.s3.eu-west-1.amazonaws.com/k"


def test_signed_headers_are_deterministic_and_carry_the_session_token():
    import datetime

    client = SigV4S3Client(S3Location("b"), "AK", "SK", "TOKEN")
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    one = client.signed_headers("PUT", "h", "/b/k", b"data", now)
    assert one == client.signed_headers("PUT", "h", "/b/k", b"data", now)
    assert one["x-amz-security-token"] == "TOKEN"
    assert one["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/20260102/us-east-1/")
    assert "x-amz-security-token" in one["authorization"]
    other = client.signed_headers("PUT", "h", "/b/k", b"datb", now)
    assert other["authorization"] != one["authorization"]
    anonymous = SigV4S3Client(S3Location("b"), None, None)
    assert "authorization" not in anonymous.signed_headers("GET", "h", "/b/k", b"")
