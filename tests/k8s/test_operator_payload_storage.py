"""spec.payloadStorage, spec.history and spec.shutdownGraceSeconds on a real API server.

The operator runs as a subprocess (``python -m deepagent_operator run``) watching one
namespace; kwok makes the worker pods Ready. The last test starts the worker from the
operator's Deployment (env and Secrets resolved like the kubelet does) against a real
Temporal and a real S3 server (SeaweedFS) and shows a large state going to the bucket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from temporalio.client import Client

from deepagent_operator.kube import Kube
from deepagent_temporal import TemporalDeepAgent
from deepagent_temporal import storage as payload_storage
from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.converter import data_converter
from deepagent_temporal.dev.histories import chain_histories
from deepagent_temporal.dev.servers import ManagedProcess, free_port
from tests.harness import s3 as s3_harness
from tests.harness.operator_process import OperatorProcess
from tests.harness.pods import container_argv, container_env, decode_secret_data
from tests.harness.wait import wait_for

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "deepagent.yaml"
GROUP, VERSION, PLURAL = "deepagent.dev", "v1alpha1", "deepagents"
WAIT = 60.0
RESYNC = 2.0
N = WorkerEnv.name


@pytest.fixture(scope="module")
def kube(k8s_cluster) -> Kube:
    k8s_cluster.install_crd(CRD)
    return Kube(k8s_cluster.api_client)


@pytest.fixture(scope="module")
def ns(k8s_cluster, kube):
    name = k8s_cluster.create_namespace("payload")
    yield name
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(k8s_cluster, ns, request, tmp_path_factory):
    op = OperatorProcess(
        k8s_cluster.kubeconfig,
        [ns],
        resync_seconds=RESYNC,
        log_dir=str(tmp_path_factory.mktemp("operator-logs")),
    )
    op.start()
    yield op
    op.stop()
    if request.session.testsfailed:
        print(f"--- operator log ({op.log_path}) ---\n{op.log_tail(200)}")


def agent(ns: str, name: str, spec: dict) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeepAgent",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def base_spec(**kw) -> dict:
    spec = {
        "graph": "my_agents.coder:agent",
        "image": "example/agent:1",
        "temporal": {"address": "temporal:7233"},
    }
    spec.update(kw)
    return spec


STORAGE = {
    "s3": {
        "bucket": "agent-payloads",
        "endpoint": "http://seaweedfs.storage.svc:8333",
        "region": "eu-west-1",
        "prefix": "deepagent/",
    },
    "credentialsSecretRef": {"name": "s3-creds", "sessionTokenKey": "token"},
    "thresholdBytes": 4096,
    "compression": "zstd",
}
CREDS = {"AWS_ACCESS_KEY_ID": "AKIA-1", "AWS_SECRET_ACCESS_KEY": "secret-1", "token": "t-1"}


def apply(k8s_cluster, obj: dict) -> None:
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def status_of(kube, ns, name) -> dict:
    return (kube.get("DeepAgent", ns, name) or {}).get("status") or {}


def cond(kube, ns, name, type_: str) -> dict:
    for c in status_of(kube, ns, name).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_phase(kube, ns, name, phase: str, timeout: float = WAIT) -> dict:
    return wait_for(
        f"{name} phase {phase}",
        lambda: (st := status_of(kube, ns, name)).get("phase") == phase and st,
        timeout,
    )


def template_hash(dep: dict) -> str:
    return dep["spec"]["template"]["metadata"]["annotations"]["deepagent.dev/config-hash"]


def container_env_entries(dep: dict) -> dict:
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def secret_body(name: str, data: dict[str, str]) -> client.V1Secret:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    )


def create_secret(k8s_cluster, ns: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(k8s_cluster.api_client).create_namespaced_secret(ns, secret_body(name, data))


def replace_secret(k8s_cluster, ns: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(k8s_cluster.api_client).replace_namespaced_secret(
        name, ns, secret_body(name, data)
    )


# -- the worker Deployment carries the settings ----------------------------------------


def test_payload_storage_is_rendered_into_the_worker_env(k8s_cluster, kube, ns, operator):
    create_secret(k8s_cluster, ns, "s3-creds", CREDS)
    spec = base_spec(
        payloadStorage=STORAGE,
        history={"maxBytes": 5_000_000, "maxEvents": 2000},
        shutdownGraceSeconds=120,
    )
    apply(k8s_cluster, agent(ns, "stored", spec))
    wait_phase(kube, ns, "stored", "Ready")
    assert cond(kube, ns, "stored", "SpecValid")["status"] == "True"
    dep = kube.get("Deployment", ns, "stored-worker")
    env = container_env_entries(dep)
    plain = {
        N("payload_s3_bucket"): "agent-payloads",
        N("payload_s3_endpoint"): "http://seaweedfs.storage.svc:8333",
        N("payload_s3_region"): "eu-west-1",
        N("payload_s3_prefix"): "deepagent/",
        N("payload_threshold_bytes"): "4096",
        N("payload_compression"): "zstd",
        N("history_max_bytes"): "5000000",
        N("history_max_events"): "2000",
        N("shutdown_grace_seconds"): "120",
    }
    assert {name: env[name].get("value") for name in plain} == plain
    refs = {
        name: env[name]["valueFrom"]["secretKeyRef"]
        for name in (N("aws_access_key_id"), N("aws_secret_access_key"), N("aws_session_token"))
    }
    assert refs == {
        N("aws_access_key_id"): {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"},
        N("aws_secret_access_key"): {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"},
        N("aws_session_token"): {"name": "s3-creds", "key": "token"},
    }
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 145  # the worker's grace + 25 s
    # The credentials are in no manifest, only their references.
    assert "secret-1" not in json.dumps(dep)

    # Rotating the credentials rolls the workers (the config hash covers the Secret's data).
    before = template_hash(dep)
    replace_secret(k8s_cluster, ns, "s3-creds", dict(CREDS, AWS_SECRET_ACCESS_KEY="secret-2"))
    wait_for(
        "the workers to roll with the new credentials",
        lambda: template_hash(kube.get("Deployment", ns, "stored-worker")) != before,
        WAIT,
        logs=operator.log_tail,
    )
    k8s_cluster.kubectl("delete", "da", "stored", "-n", ns)


def test_missing_credentials_secret_is_a_condition_then_recovers(k8s_cluster, kube, ns, operator):
    storage = dict(STORAGE, credentialsSecretRef={"name": "late-s3"})
    apply(k8s_cluster, agent(ns, "late", base_spec(payloadStorage=storage)))
    c = wait_for(
        "SpecValid=False",
        lambda: (c := cond(kube, ns, "late", "SpecValid")) and c["status"] == "False" and c,
        WAIT,
        logs=operator.log_tail,
    )
    assert c["reason"] == "SecretNotFound"
    assert "spec.payloadStorage.credentialsSecretRef" in c["message"]
    assert '"late-s3"' in c["message"] and "create the Secret" in c["message"]
    assert status_of(kube, ns, "late")["phase"] == "Failed"
    assert kube.get("Deployment", ns, "late-worker") is None

    # A Secret without the secret key: the condition names the key.
    create_secret(k8s_cluster, ns, "late-s3", {"AWS_ACCESS_KEY_ID": "AKIA-2"})
    c = wait_for(
        "SecretKeyNotFound",
        lambda: (
            (c := cond(kube, ns, "late", "SpecValid")).get("reason") == "SecretKeyNotFound" and c
        ),
        WAIT,
        logs=operator.log_tail,
    )
    assert '"AWS_SECRET_ACCESS_KEY"' in c["message"]

    # With the key the agent proceeds to Ready (Secrets are re-read at every resync).
    replace_secret(k8s_cluster, ns, "late-s3", {k: CREDS[k] for k in list(CREDS)[:2]})
    wait_phase(kube, ns, "late", "Ready")
    assert cond(kube, ns, "late", "SpecValid")["status"] == "True"
    env = container_env_entries(kube.get("Deployment", ns, "late-worker"))
    assert env[N("aws_secret_access_key")]["valueFrom"]["secretKeyRef"]["name"] == "late-s3"
    assert operator.proc.poll() is None
    k8s_cluster.kubectl("delete", "da", "late", "-n", ns)


# -- the API server rejects malformed settings, naming the field -----------------------

BAD = [
    (
        "bucket-uppercase",
        {"payloadStorage": {"s3": {"bucket": "My_Bucket"}}},
        "payloadStorage.s3.bucket",
    ),
    ("bucket-short", {"payloadStorage": {"s3": {"bucket": "ab"}}}, "payloadStorage.s3.bucket"),
    ("bucket-missing", {"payloadStorage": {"s3": {}}}, "payloadStorage.s3.bucket"),
    ("s3-missing", {"payloadStorage": {"thresholdBytes": 4096}}, "payloadStorage.s3"),
    (
        "endpoint-no-scheme",
        {"payloadStorage": {"s3": {"bucket": "bkt", "endpoint": "s3:8333"}}},
        "payloadStorage.s3.endpoint",
    ),
    (
        "prefix-leading-slash",
        {"payloadStorage": {"s3": {"bucket": "bkt", "prefix": "/x"}}},
        "payloadStorage.s3.prefix",
    ),
    (
        "threshold-negative",
        {"payloadStorage": {"s3": {"bucket": "bkt"}, "thresholdBytes": -1}},
        "payloadStorage.thresholdBytes",
    ),
    (
        "threshold-over-limit",
        {"payloadStorage": {"s3": {"bucket": "bkt"}, "thresholdBytes": 3_000_000}},
        "payloadStorage.thresholdBytes",
    ),
    (
        "compression-unknown",
        {"payloadStorage": {"s3": {"bucket": "bkt"}, "compression": "gzip"}},
        "payloadStorage.compression",
    ),
    (
        "credentials-no-name",
        {"payloadStorage": {"s3": {"bucket": "bkt"}, "credentialsSecretRef": {}}},
        "payloadStorage.credentialsSecretRef.name",
    ),
    (
        "credentials-bad-key",
        {
            "payloadStorage": {
                "s3": {"bucket": "bkt"},
                "credentialsSecretRef": {"name": "c", "secretAccessKeyKey": "a b"},
            }
        },
        "payloadStorage.credentialsSecretRef.secretAccessKeyKey",
    ),
    ("history-events-over", {"history": {"maxEvents": 60_000}}, "history.maxEvents"),
    ("history-bytes-small", {"history": {"maxBytes": 1000}}, "history.maxBytes"),
    ("grace-negative", {"shutdownGraceSeconds": -5}, "shutdownGraceSeconds"),
]


@pytest.mark.parametrize("case_id,extra,field", BAD, ids=[b[0] for b in BAD])
def test_malformed_settings_are_rejected_naming_the_field(
    k8s_cluster, kube, ns, case_id, extra, field
):
    body = agent(ns, f"bad-{case_id}", base_spec(**extra))
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(k8s_cluster.api_client).create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, body, field_validation="Strict"
        )
    assert exc.value.status in (400, 422), exc.value
    message = json.loads(exc.value.body)["message"]
    assert f"spec.{field}" in message, f"{case_id}: spec.{field} not in {message!r}"


def test_defaults_are_filled_in_by_the_api_server(k8s_cluster, kube, ns):
    body = agent(
        ns,
        "defaults",
        base_spec(payloadStorage={"s3": {"bucket": "bkt"}, "credentialsSecretRef": {"name": "c"}}),
    )
    created = client.CustomObjectsApi(k8s_cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body, dry_run="All"
    )
    assert created["spec"]["payloadStorage"]["credentialsSecretRef"] == {
        "name": "c",
        "accessKeyIdKey": N("aws_access_key_id"),
        "secretAccessKeyKey": N("aws_secret_access_key"),
    }
    assert "thresholdBytes" not in created["spec"]["payloadStorage"]  # the runtime's default


# -- end to end: the worker from the rendered pod template, a real S3 --------------------

GRAPH = "deepagent_temporal.examples.shapes:long_loop"


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.mark.e2e
def test_worker_from_the_rendered_template_stores_large_state_in_s3(
    k8s_cluster, kube, ns, operator, temporal_server, s3_server, tmp_path
):
    bucket = s3_server.create_bucket()
    task_queue = f"payload-{uuid.uuid4().hex[:8]}"
    create_secret(
        k8s_cluster,
        ns,
        "seaweed-creds",
        {"access": s3_harness.ACCESS_KEY, "secret": s3_harness.SECRET_KEY},
    )
    storage = {
        "s3": {"bucket": bucket, "endpoint": s3_server.endpoint, "prefix": "agents/"},
        "credentialsSecretRef": {
            "name": "seaweed-creds",
            "accessKeyIdKey": "access",
            "secretAccessKeyKey": "secret",
        },
        "thresholdBytes": 1024,
    }
    spec = {
        "graph": GRAPH,
        "image": "example/agent:1",
        "taskQueue": task_queue,
        "temporal": {"address": temporal_server.address},
        "payloadStorage": storage,
        "history": {"maxEvents": 100},
    }
    apply(k8s_cluster, agent(ns, "e2e-s3", spec))
    wait_phase(kube, ns, "e2e-s3", "Ready")

    # The worker, as the kubelet would start it from the operator's Deployment.
    dep = kube.get("Deployment", ns, "e2e-s3-worker")
    [container] = dep["spec"]["template"]["spec"]["containers"]

    def look_up(kind: str, name: str) -> dict[str, str]:
        kind_name = "Secret" if kind == "secret" else "ConfigMap"
        obj = kube.get(kind_name, ns, name) or {}
        data = obj.get("data") or {}
        return decode_secret_data(data) if kind == "secret" else data

    env = container_env(container, look_up)
    assert env[N("aws_access_key_id")] == s3_harness.ACCESS_KEY
    health_port = free_port()
    env[N("health_port")] = str(health_port)
    env[N("health_host")] = "127.0.0.1"
    argv = container_argv(container, env)
    assert argv == ["deepagent-temporal", "worker"]
    worker = ManagedProcess(
        "payload-worker",
        [str(Path(sys.executable).parent / argv[0]), *argv[1:]],
        tmp_path,
        env=env,
    )
    worker.start()
    try:
        worker.wait_until(lambda: _http_status(f"http://127.0.0.1:{health_port}/readyz") == 200, 90)
        # A client with the same settings (from the same env) runs 12 steps of 64 KB notes.
        settings = payload_storage.PayloadStorage.from_env(WorkerEnv.from_env(env))
        result, histories = asyncio.run(_run_loop(temporal_server.address, task_queue, settings))
    finally:
        worker.stop()
    assert result["steps"] == 12 and sum(len(n) for n in result["notes"]) > 700_000
    objects, stored = s3_server.usage(bucket, "agents/")  # under spec.payloadStorage.s3.prefix
    assert objects > 5 and stored > 100_000, "large payloads went to the bucket"
    assert len(histories) >= 2, "the history budget from spec.history made it continue as new"
    for run in histories:  # references only
        assert run.size_bytes < 300_000, run
    k8s_cluster.kubectl("delete", "da", "e2e-s3", "-n", ns)


async def _run_loop(address: str, task_queue: str, settings):
    temporal = await Client.connect(
        address, namespace="default", data_converter=payload_storage.apply(data_converter, settings)
    )
    da = TemporalDeepAgent(None, temporal, task_queue=task_queue, graph_name=GRAPH)
    thread = f"payload-e2e-{uuid.uuid4().hex}"
    config = {"configurable": {"thread_id": thread}, "recursion_limit": 1000}
    # astream follows the chain of runs (continue-as-new); tokens take the Temporal path.
    inp = {"limit": 12, "note_bytes": 65536, "note_kind": "text"}
    tokens = [ev async for ev in da.astream(inp, config, stream_mode="tokens")]
    assert any(ev["type"] == "token" for ev in tokens)
    state = await da.get_state(config)
    return state.values, await chain_histories(temporal, thread)
