"""spec.payloadStorage, spec.history and spec.shutdownGraceSeconds: model, worker env,
referenced credentials Secret, config hash and the pods' termination grace period."""

from __future__ import annotations

import copy
import typing

import pydantic
import pytest

from deepagent_operator.children import (
    build_children,
    check_references,
    config_hash,
    referenced_objects,
)
from deepagent_operator.config import OperatorConfig
from deepagent_operator.model import SpecError, format_validation_error, parse_spec
from deepagent_operator.worker_spec import Compression
from deepagent_temporal import storage
from deepagent_temporal.contract import WorkerEnv

CONFIG = OperatorConfig(default_image="ghcr.io/example/runtime:0.1")
BASE = {"graph": "my_agents.coder:agent", "temporal": {"address": "temporal:7233"}}
STORAGE = {
    "s3": {
        "bucket": "agent-payloads",
        "endpoint": "http://seaweedfs.storage:8333",
        "region": "eu-west-1",
        "prefix": "deepagent/",
    },
    "credentialsSecretRef": {"name": "s3-creds"},
    "thresholdBytes": 4096,
    "compression": "zlib",
}
CREDS = {"AWS_ACCESS_KEY_ID": "QUtJQQ==", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}


def spec_with(**kw):
    return parse_spec({**copy.deepcopy(BASE), **kw})


def deployment(spec):
    body = {"metadata": {"name": "coder", "namespace": "agents", "uid": "uid-1"}, "spec": {}}
    (dep,) = [c for c in build_children(body, spec, CONFIG, "h") if c["kind"] == "Deployment"]
    return dep


def pod(spec):
    return deployment(spec)["spec"]["template"]["spec"]


def env_list(spec):
    return pod(spec)["containers"][0]["env"]


def env_of(spec):
    return {e["name"]: e for e in env_list(spec)}


N = WorkerEnv.name


# -- worker env ----------------------------------------------------------------------


def test_payload_storage_renders_values_and_credentials_as_secret_refs():
    env = env_of(spec_with(payloadStorage=STORAGE))
    assert env[N("payload_s3_bucket")] == {
        "name": N("payload_s3_bucket"),
        "value": "agent-payloads",
    }
    assert env[N("payload_s3_endpoint")]["value"] == "http://seaweedfs.storage:8333"
    assert env[N("payload_s3_region")]["value"] == "eu-west-1"
    assert env[N("payload_s3_prefix")]["value"] == "deepagent/"
    assert env[N("payload_threshold_bytes")]["value"] == "4096"
    assert env[N("payload_compression")]["value"] == "zlib"
    assert env[N("aws_access_key_id")] == {
        "name": N("aws_access_key_id"),
        "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}},
    }
    assert env[N("aws_secret_access_key")]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert N("aws_session_token") not in env
    # No credential value is ever written into the manifest.
    assert all("value" not in e for e in env.values() if e["name"].startswith("AWS_"))


def test_payload_storage_env_follows_the_contract_order_before_user_env():
    spec = spec_with(payloadStorage=STORAGE, env=[{"name": "EXTRA", "value": "1"}])
    names = [e["name"] for e in env_list(spec)]
    assert names[-1] == "EXTRA"
    order = [var.name for var in WorkerEnv.variables()]
    assert names[:-1] == sorted(names[:-1], key=order.index)


def test_only_what_is_set_is_rendered_the_rest_stays_the_runtime_default():
    env = env_of(spec_with(payloadStorage={"s3": {"bucket": "b-1"}}))
    assert env[N("payload_s3_bucket")]["value"] == "b-1"
    for field in (
        "payload_s3_endpoint",
        "payload_s3_region",
        "payload_s3_prefix",
        "payload_threshold_bytes",
        "payload_compression",
        "aws_access_key_id",
        "aws_secret_access_key",
        "history_max_bytes",
        "history_max_events",
        "shutdown_grace_seconds",
    ):
        assert N(field) not in env, field
    plain = env_of(spec_with())
    assert not [n for n in plain if n.startswith("DEEPAGENT_PAYLOAD") or n.startswith("AWS_")]


def test_custom_secret_keys_and_session_token():
    creds = {
        "name": "sts",
        "accessKeyIdKey": "id",
        "secretAccessKeyKey": "secret",
        "sessionTokenKey": "token",
    }
    env = env_of(spec_with(payloadStorage={"s3": {"bucket": "bkt"}, "credentialsSecretRef": creds}))
    refs = {
        name: env[name]["valueFrom"]["secretKeyRef"]
        for name in (N("aws_access_key_id"), N("aws_secret_access_key"), N("aws_session_token"))
    }
    assert refs == {
        N("aws_access_key_id"): {"name": "sts", "key": "id"},
        N("aws_secret_access_key"): {"name": "sts", "key": "secret"},
        N("aws_session_token"): {"name": "sts", "key": "token"},
    }


def test_history_budget_and_shutdown_grace_are_rendered():
    spec = spec_with(history={"maxBytes": 4_000_000, "maxEvents": 1000}, shutdownGraceSeconds=90)
    env = env_of(spec)
    assert env[N("history_max_bytes")]["value"] == "4000000"
    assert env[N("history_max_events")]["value"] == "1000"
    assert env[N("shutdown_grace_seconds")]["value"] == "90"
    env = env_of(spec_with(history={"maxEvents": 500}))
    assert env[N("history_max_events")]["value"] == "500"
    assert N("history_max_bytes") not in env


def test_rendered_env_is_what_the_runtime_reads():
    """The worker's own parsing of the rendered env (Secrets resolved as the kubelet would)."""
    spec = spec_with(
        payloadStorage=dict(STORAGE, credentialsSecretRef={"name": "c", "sessionTokenKey": "t"}),
        history={"maxBytes": 2_000_000, "maxEvents": 300},
        shutdownGraceSeconds=45,
    )
    secret = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "sk", "t": "tok"}
    environ = {}
    for e in env_list(spec):
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["name"] == "c":
                environ[e["name"]] = secret[ref["key"]]
        else:
            environ[e["name"]] = e["value"]
    env = WorkerEnv.from_env(environ)
    assert (env.history_max_bytes, env.history_max_events) == (2_000_000, 300)
    assert env.shutdown_grace_seconds == 45
    ps = storage.PayloadStorage.from_env(env)
    assert ps.location == storage.S3Location(
        bucket="agent-payloads",
        region="eu-west-1",
        endpoint="http://seaweedfs.storage:8333",
        prefix="deepagent/",
    )
    assert (ps.threshold_bytes, ps.compression) == (4096, "zlib")
    assert (ps.access_key, ps.secret_key, ps.session_token) == ("AKIA", "sk", "tok")


@pytest.mark.parametrize("compression", typing.get_args(Compression))
def test_every_compression_of_the_crd_is_one_the_runtime_accepts(compression):
    spec = spec_with(payloadStorage={"s3": {"bucket": "bkt"}, "compression": compression})
    environ = {e["name"]: e["value"] for e in env_list(spec) if "value" in e}
    ps = storage.PayloadStorage.from_env(WorkerEnv.from_env(environ))
    assert ps.compression == (None if compression == "none" else compression)


# -- referenced credentials Secret and the config hash -------------------------------


def test_credentials_secret_is_a_referenced_object():
    spec = spec_with(payloadStorage=STORAGE)
    (ref,) = referenced_objects(spec)
    assert (ref.kind, ref.name, ref.field) == (
        "Secret",
        "s3-creds",
        "spec.payloadStorage.credentialsSecretRef",
    )
    assert ref.keys == ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") and not ref.optional
    assert referenced_objects(spec_with(payloadStorage={"s3": {"bucket": "bkt"}})) == []


def test_missing_credentials_secret_or_key_is_a_spec_error_naming_it():
    spec = spec_with(payloadStorage=STORAGE)
    with pytest.raises(SpecError) as exc:
        check_references(spec, {("Secret", "s3-creds"): None})
    assert exc.value.reason == "SecretNotFound"
    assert exc.value.field == "spec.payloadStorage.credentialsSecretRef"
    assert 'Secret "s3-creds" not found' in str(exc.value)
    assert "create the Secret" in str(exc.value)
    with pytest.raises(SpecError) as exc:
        check_references(spec, {("Secret", "s3-creds"): {"AWS_ACCESS_KEY_ID": "QQ=="}})
    assert exc.value.reason == "SecretKeyNotFound"
    assert 'has no key "AWS_SECRET_ACCESS_KEY"' in str(exc.value)
    check_references(spec, {("Secret", "s3-creds"): CREDS})
    # A session token key, once named, must exist too.
    creds = dict(STORAGE["credentialsSecretRef"], sessionTokenKey="token")
    spec2 = spec_with(payloadStorage=dict(STORAGE, credentialsSecretRef=creds))
    with pytest.raises(SpecError) as exc:
        check_references(spec2, {("Secret", "s3-creds"): CREDS})
    assert 'has no key "token"' in str(exc.value)


def test_config_hash_changes_with_the_credentials_secret_and_the_settings():
    spec = spec_with(payloadStorage=STORAGE)
    base = config_hash(spec, CONFIG, {("Secret", "s3-creds"): CREDS})
    assert base == config_hash(spec, CONFIG, {("Secret", "s3-creds"): dict(CREDS)})
    rotated = dict(CREDS, AWS_SECRET_ACCESS_KEY="bmV3")
    assert base != config_hash(spec, CONFIG, {("Secret", "s3-creds"): rotated})
    for change in (
        {"payloadStorage": dict(STORAGE, thresholdBytes=8192)},
        {"payloadStorage": STORAGE, "history": {"maxEvents": 1000}},
        {"payloadStorage": STORAGE, "shutdownGraceSeconds": 120},
    ):
        other = spec_with(**change)
        assert base != config_hash(other, CONFIG, {("Secret", "s3-creds"): CREDS}), change


def test_specs_without_the_new_fields_keep_their_hash():
    """Upgrading the operator does not roll existing workers: unset fields are not dumped."""
    spec = spec_with()
    dumped = spec.dump()
    assert not {"payloadStorage", "history", "shutdownGraceSeconds"} & set(dumped)


# -- the pods' termination grace period ----------------------------------------------


@pytest.mark.parametrize(
    "extra,grace",
    [
        ({}, 60),  # the runtime's default grace (30 s) + 25 s margin, floor 60
        ({"shutdownGraceSeconds": 0}, 60),
        ({"shutdownGraceSeconds": 35}, 60),
        ({"shutdownGraceSeconds": 36}, 61),
        ({"shutdownGraceSeconds": 600}, 625),
        # spec.env comes last in the container, so a plain value there is what the worker uses
        ({"env": [{"name": N("shutdown_grace_seconds"), "value": "300.5"}]}, 326),
        (
            {
                "shutdownGraceSeconds": 600,
                "env": [{"name": N("shutdown_grace_seconds"), "value": "100"}],
            },
            125,
        ),
        # a value from a Secret cannot be known: the spec field (or default) decides
        (
            {
                "shutdownGraceSeconds": 200,
                "env": [
                    {
                        "name": N("shutdown_grace_seconds"),
                        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                    }
                ],
            },
            225,
        ),
    ],
)
def test_termination_grace_covers_the_worker_shutdown_grace(extra, grace):
    assert pod(spec_with(**extra))["terminationGracePeriodSeconds"] == grace


def test_default_worker_grace_matches_the_runtime_default():
    assert (
        WorkerEnv.shutdown_grace_seconds + 25 <= pod(spec_with())["terminationGracePeriodSeconds"]
    )


# -- validation (the CRD has the same bounds and patterns) ---------------------------


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"payloadStorage": {}}, "spec.payloadStorage.s3"),
        ({"payloadStorage": {"s3": {}}}, "spec.payloadStorage.s3.bucket"),
        ({"payloadStorage": {"s3": {"bucket": "My_Bucket"}}}, "spec.payloadStorage.s3.bucket"),
        ({"payloadStorage": {"s3": {"bucket": "ab"}}}, "spec.payloadStorage.s3.bucket"),
        ({"payloadStorage": {"s3": {"bucket": "a..b"}}}, "spec.payloadStorage.s3.bucket"),
        ({"payloadStorage": {"s3": {"bucket": "-ab"}}}, "spec.payloadStorage.s3.bucket"),
        ({"payloadStorage": {"s3": {"bucket": "a" * 64}}}, "spec.payloadStorage.s3.bucket"),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt", "endpoint": "seaweedfs:8333"}}},
            "spec.payloadStorage.s3.endpoint",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt", "endpoint": "http://h:1/?x=1"}}},
            "spec.payloadStorage.s3.endpoint",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt", "region": "us east"}}},
            "spec.payloadStorage.s3.region",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt", "prefix": "/abs"}}},
            "spec.payloadStorage.s3.prefix",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt"}, "thresholdBytes": -1}},
            "spec.payloadStorage.thresholdBytes",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt"}, "thresholdBytes": 3_000_000}},
            "spec.payloadStorage.thresholdBytes",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt"}, "compression": "gzip"}},
            "spec.payloadStorage.compression",
        ),
        (
            {"payloadStorage": {"s3": {"bucket": "bkt"}, "credentialsSecretRef": {}}},
            "spec.payloadStorage.credentialsSecretRef.name",
        ),
        (
            {
                "payloadStorage": {
                    "s3": {"bucket": "bkt"},
                    "credentialsSecretRef": {"name": "c", "accessKeyIdKey": "a/b"},
                }
            },
            "spec.payloadStorage.credentialsSecretRef.accessKeyIdKey",
        ),
        ({"payloadStorage": {"s3": {"bucket": "bkt"}, "typo": 1}}, "spec.payloadStorage.typo"),
        ({"history": {"maxEvents": 60_000}}, "spec.history.maxEvents"),
        ({"history": {"maxEvents": 0}}, "spec.history.maxEvents"),
        ({"history": {"maxBytes": 100 * 1024 * 1024}}, "spec.history.maxBytes"),
        ({"shutdownGraceSeconds": -1}, "spec.shutdownGraceSeconds"),
        ({"shutdownGraceSeconds": 7200}, "spec.shutdownGraceSeconds"),
    ],
)
def test_invalid_settings_are_rejected_naming_the_field(extra, field):
    with pytest.raises(pydantic.ValidationError) as exc:
        spec_with(**extra)
    assert format_validation_error(exc.value)[0] == field


@pytest.mark.parametrize(
    "s3",
    [
        {"bucket": "abc"},
        {"bucket": "my.bucket-1", "region": "us-east-1"},
        {"bucket": "bkt", "endpoint": "https://s3.example.com/base", "prefix": "team-a/runs/"},
        {"bucket": "bkt", "endpoint": "http://10.0.0.1:8333", "region": "garage"},
    ],
)
def test_valid_s3_settings(s3):
    assert spec_with(payloadStorage={"s3": s3}).payload_storage.s3.bucket == s3["bucket"]
