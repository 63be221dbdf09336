"""A user's journey on the local control plane, every process started as its pod would be.

helm install the chart -> the operator starts from the chart's Deployment -> kubectl apply a
DeepAgent with Managed Redis -> Redis starts from the operator's StatefulSet (its password in
a config file from the operator's Secret, not in argv) -> Ready once the operator's AUTH +
PING succeed -> the worker starts from the operator's Deployment (command, args, env; Secrets
resolved like the kubelet does) -> a client streams an answer while Redis is killed -> the
password is rotated (Secret deleted): Redis and the worker roll, streaming goes through Redis
again -> delete -> everything is gone. On the way, spec.gateway is enabled: the gateway starts
from the operator's Deployment (its API key from the operator's Secret, mounted as a file) and
the unmodified langgraph-sdk streams an answer through it (tests.harness.gateway_pods).

The local cluster runs no containers, so three things stand in for the pod network: each
process binds to 127.0.0.1 on a free port instead of the pod IP's fixed port, the Service
name `<agent>-redis.<ns>.svc:6379` resolves to that Redis (for the worker by rewriting its
REDIS_URL, for the operator's AUTH + PING check through tests.harness.service_dns), a volume
mount is a local directory filled like the kubelet fills it, and the operator gets a
kubeconfig with the chart's ServiceAccount token instead of the mounted token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from deepagent_operator.kube import Kube
from deepagent_temporal.dev.servers import ManagedProcess, free_port
from deepagent_temporal.examples.research_agent import SCRIPT, search
from tests.harness.gateway_pods import gateway_env, http_status, start_gateway, stream_answer
from tests.harness.pods import container_argv, container_env, decode_secret_data
from tests.harness.redis_pods import RedisPods
from tests.harness.service_dns import HOSTS_ENV, read_hosts
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.k8s]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/deepagent-operator"
AGENT = "e2e-agent"
GRAPH = "deepagent_temporal.examples.research_agent:agent"


def _dockerfile(path: Path, instruction: str) -> list[str]:
    """The final stage's JSON-form ENTRYPOINT or CMD: what the kubelet falls back to."""
    found: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith(instruction + " "):
            found = json.loads(line[len(instruction) + 1 :])
    return found


def _get_json(k8s_cluster, *args: str) -> dict:
    return json.loads(k8s_cluster.kubectl("get", *args, "-o", "json").stdout)


def _look_up(k8s_cluster, namespace: str):
    def look_up(kind: str, name: str) -> dict[str, str]:
        obj = _get_json(k8s_cluster, kind, name, "-n", namespace)
        return decode_secret_data(obj.get("data")) if kind == "secret" else obj.get("data", {})

    return look_up


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.fixture
def namespaces(k8s_cluster):
    created = [k8s_cluster.create_namespace("e2eop"), k8s_cluster.create_namespace("e2e")]
    yield created
    for namespace in created:
        k8s_cluster.delete_namespace(namespace)


def test_helm_apply_stream_failover_delete(k8s_cluster, temporal_server, namespaces, tmp_path):
    op_ns, ns = namespaces
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    task_queue = f"e2e-{uuid.uuid4().hex[:8]}"
    started: list[ManagedProcess] = []
    k8s_cluster.helm(
        "install", release, str(CHART), "--namespace", op_ns,
        "--set", f"watch.namespaces={{{ns}}}",
        "--set", "resyncSeconds=5",
    )  # fmt: skip
    try:
        # 1. The operator, from the chart's Deployment.
        op_deploy = _get_json(
            k8s_cluster, "deployment", f"{release}-deepagent-operator", "-n", op_ns
        )
        op_pod = op_deploy["spec"]["template"]["spec"]
        [op_container] = op_pod["containers"]
        op_env = container_env(op_container, _look_up(k8s_cluster, op_ns))
        op_argv = container_argv(
            op_container, op_env, _dockerfile(ROOT / "operator/Dockerfile", "ENTRYPOINT")
        )
        assert op_argv[:2] == ["deepagent-operator", "run"]
        liveness_port = free_port()
        op_argv = [
            re.sub(
                r"^--liveness=http://0\.0\.0\.0:\d+",
                f"--liveness=http://127.0.0.1:{liveness_port}",
                a,
            )
            for a in op_argv
        ]
        op_env["DEEPAGENT_METRICS_PORT"] = "0"
        op_env["KUBECONFIG"] = k8s_cluster.service_account_kubeconfig(
            op_ns, op_pod["serviceAccountName"], tmp_path / "operator.kubeconfig"
        )
        # The console script's module, under the Service-name resolver (see the docstring).
        hosts_file = tmp_path / "hosts.json"
        op_env[HOSTS_ENV] = str(hosts_file)
        operator = ManagedProcess(
            "operator",
            [sys.executable, "-m", "tests.harness.service_dns", "deepagent_operator", *op_argv[1:]],
            tmp_path,
            env=op_env,
        )
        operator.start()
        started.append(operator)
        operator.wait_until(
            lambda: _http_status(f"http://127.0.0.1:{liveness_port}/healthz") == 200, 60
        )

        # 2. kubectl apply a DeepAgent with Managed Redis; Redis runs from the operator's
        # StatefulSet (its config file, with the password, from the operator's Secret); the
        # DeepAgent is Ready once the operator's AUTH + PING succeed.
        redis_pods = RedisPods(Kube(k8s_cluster.api_client), ns, hosts_file, tmp_path)
        redis_pods.__enter__()
        started.append(redis_pods)  # type: ignore[arg-type]
        agent = {
            "apiVersion": "deepagent.dev/v1alpha1",
            "kind": "DeepAgent",
            "metadata": {"name": AGENT, "namespace": ns},
            "spec": {
                "graph": GRAPH,
                "replicas": 1,
                "taskQueue": task_queue,
                "temporal": {"address": temporal_server.address, "namespace": "default"},
                "streaming": {"tokens": True, "redis": {"mode": "Managed"}},
            },
        }
        k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(agent))
        k8s_cluster.kubectl(
            "wait", "-n", ns, "--for=condition=Ready", f"deepagent/{AGENT}", "--timeout=120s"
        )

        # 3. Redis: the password is in its config file, never in its argv.
        password = decode_secret_data(
            _get_json(k8s_cluster, "secret", f"{AGENT}-redis-auth", "-n", ns)["data"]
        )["password"]
        redis_argv = redis_pods.argv(f"{AGENT}-redis")
        assert redis_argv[0] == "redis-server" and redis_argv[1].endswith("/redis.conf")
        assert "--requirepass" not in redis_argv and password not in " ".join(redis_argv)
        redis = redis_pods.running[f"{AGENT}-redis"][1]
        redis_port = int(read_hosts(hosts_file)[f"{AGENT}-redis.{ns}.svc:6379"].rpartition(":")[2])
        redis_pods.paused = True  # killed below: no restart

        # 4. The worker, from the operator's Deployment.
        def start_worker(generation: int) -> tuple[ManagedProcess, int, dict[str, str]]:
            deploy = _get_json(k8s_cluster, "deployment", f"{AGENT}-worker", "-n", ns)
            [worker_container] = deploy["spec"]["template"]["spec"]["containers"]
            worker_env = container_env(worker_container, _look_up(k8s_cluster, ns))
            service = _get_json(k8s_cluster, "service", f"{AGENT}-redis", "-n", ns)
            in_cluster = f"{AGENT}-redis.{ns}.svc:{service['spec']['ports'][0]['port']}"
            assert in_cluster in worker_env["REDIS_URL"]
            worker_env["REDIS_URL"] = worker_env["REDIS_URL"].replace(
                in_cluster, read_hosts(hosts_file)[in_cluster]
            )
            assert worker_env["DEEPAGENT_GRAPH"] == GRAPH
            assert worker_env["TEMPORAL_TASK_QUEUE"] == task_queue
            assert worker_env["TEMPORAL_ADDRESS"] == temporal_server.address
            health_port = free_port()
            worker_env["DEEPAGENT_HEALTH_PORT"] = str(health_port)
            worker_env["DEEPAGENT_HEALTH_HOST"] = "127.0.0.1"
            worker_argv = container_argv(
                worker_container,
                worker_env,
                _dockerfile(ROOT / "runtime/Dockerfile", "ENTRYPOINT"),
                _dockerfile(ROOT / "runtime/Dockerfile", "CMD"),
            )
            assert worker_argv == ["deepagent-temporal", "worker"]
            worker = ManagedProcess(
                f"worker-{generation}",
                [_venv_bin(worker_argv[0]), *worker_argv[1:]],
                tmp_path,
                env=worker_env,
            )
            worker.start()
            started.append(worker)
            worker.wait_until(
                lambda: _http_status(f"http://127.0.0.1:{health_port}/readyz") == 200, 90
            )
            return worker, health_port, worker_env

        worker, health_port, worker_env = start_worker(1)
        assert worker_env["REDIS_URL"].endswith(f"@127.0.0.1:{redis_port}/0")

        # 4b. Enable the gateway: it starts from the operator's Deployment and the unmodified
        # langgraph-sdk streams an answer through it; the workers do not roll.
        worker_hash = _get_json(k8s_cluster, "deployment", f"{AGENT}-worker", "-n", ns)["spec"][
            "template"
        ]["metadata"]["annotations"]["deepagent.dev/config-hash"]
        gateway = _gateway_streams(k8s_cluster, ns, hosts_file, tmp_path, started, operator)
        assert (
            _get_json(k8s_cluster, "deployment", f"{AGENT}-worker", "-n", ns)["spec"]["template"][
                "metadata"
            ]["annotations"]["deepagent.dev/config-hash"]
            == worker_hash
        )

        # 5. A client streams an answer; Redis is killed in the middle of it.
        answer = _stream_while_killing_redis(
            temporal_server.address, task_queue, worker_env["REDIS_URL"], redis
        )
        assert SCRIPT[0]["content"] in answer
        assert SCRIPT[-1] in answer, f"tokens lost or repeated across failover:\n{answer}"
        assert answer.count(SCRIPT[-1]) == 1
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics").read().decode()
        assert re.search(r"^deepagent_stream_failovers_total\{[^}]*\} [1-9]", metrics, re.M), (
            metrics
        )

        # 6. Rotate the Redis password by deleting its Secret: the operator makes a new one,
        # Redis and the workers roll with it (their templates carry its hash), and streaming
        # goes through Redis again, authenticated with the new password.
        def template_hash(kind: str, annotation: str) -> str:
            obj = _get_json(k8s_cluster, kind, f"{AGENT}-{kind_suffix[kind]}", "-n", ns)
            return obj["spec"]["template"]["metadata"]["annotations"][annotation]

        kind_suffix = {"statefulset": "redis", "deployment": "worker"}
        redis_hash = template_hash("statefulset", "deepagent.dev/redis-auth-hash")
        worker_hash = template_hash("deployment", "deepagent.dev/config-hash")
        gateway_hash = gateway["deployment"]["spec"]["template"]["metadata"]["annotations"][
            "deepagent.dev/config-hash"
        ]
        redis_pods.paused = False  # Redis comes back (it was killed above)
        k8s_cluster.kubectl("delete", "secret", f"{AGENT}-redis-auth", "-n", ns)
        wait_for(
            "Redis and the workers to roll with the new password",
            lambda: (
                template_hash("statefulset", "deepagent.dev/redis-auth-hash") != redis_hash
                and template_hash("deployment", "deepagent.dev/config-hash") != worker_hash
                # the gateway reads Redis with the password too
                and _get_json(k8s_cluster, "deployment", f"{AGENT}-gateway", "-n", ns)["spec"][
                    "template"
                ]["metadata"]["annotations"]["deepagent.dev/config-hash"]
                != gateway_hash
            ),
            timeout=60,
            logs=operator.log_tail,
        )
        new_password = decode_secret_data(
            _get_json(k8s_cluster, "secret", f"{AGENT}-redis-auth", "-n", ns)["data"]
        )["password"]
        assert new_password != password
        wait_for(
            "Redis rolled: the operator's AUTH + PING succeed with the new password",
            lambda: (
                redis_pods.starts[f"{AGENT}-redis"] >= 3
                and _get_json(k8s_cluster, "deepagent", AGENT, "-n", ns)["status"]["phase"]
                == "Ready"
            ),
            timeout=60,
            logs=operator.log_tail,
        )
        worker.stop()  # the worker pod rolls: the new one gets the new password
        worker, health_port, worker_env = start_worker(2)
        assert new_password in worker_env["REDIS_URL"]
        answer = _stream(temporal_server.address, task_queue, worker_env["REDIS_URL"])
        assert SCRIPT[0]["content"] in answer and answer.count(SCRIPT[-1]) == 1
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics").read().decode()
        redis_tokens = re.search(
            r'^deepagent_stream_tokens_published_total\{transport="redis"\} (\S+)', metrics, re.M
        )
        assert redis_tokens and float(redis_tokens.group(1)) > 0, metrics
        assert not re.search(r"^deepagent_stream_failovers_total\{[^}]*\} [1-9]", metrics, re.M)

        # 7. Delete the DeepAgent: every child is garbage-collected.
        k8s_cluster.kubectl("delete", "deepagent", AGENT, "-n", ns, "--wait=true")
        children = [
            ("deployment", f"{AGENT}-worker"),
            ("statefulset", f"{AGENT}-redis"),
            ("service", f"{AGENT}-redis"),
            ("secret", f"{AGENT}-redis-auth"),
            ("networkpolicy", f"{AGENT}-redis"),
            ("deployment", f"{AGENT}-gateway"),
            ("service", f"{AGENT}-gateway"),
            ("secret", f"{AGENT}-gateway-api-key"),
        ]

        def all_gone() -> bool:
            return all(
                k8s_cluster.kubectl("get", kind, name, "-n", ns, check=False).returncode != 0
                for kind, name in children
            )

        wait_for(
            "the DeepAgent's children to be garbage-collected",
            all_gone,
            timeout=90,
            interval=0.3,
            logs=operator.log_tail,
        )
    finally:
        for process in reversed(started):
            if isinstance(process, RedisPods):
                process.__exit__(None, None, None)
            else:
                process.stop()
        k8s_cluster.helm("uninstall", release, "--namespace", op_ns, check=False)


def _gateway_streams(k8s_cluster, ns, hosts_file, tmp_path, started, operator) -> dict:
    """Enable spec.gateway, start the gateway as its pod would, stream through it."""
    patch = {"spec": {"gateway": {"enabled": True}}}
    k8s_cluster.kubectl(
        "patch", "deepagent", AGENT, "-n", ns, "--type=merge", "-p", json.dumps(patch)
    )
    wait_for(
        "the gateway's Deployment, Service and key",
        lambda: all(
            k8s_cluster.kubectl("get", kind, name, "-n", ns, check=False).returncode == 0
            for kind, name in [
                ("deployment", f"{AGENT}-gateway"),
                ("service", f"{AGENT}-gateway"),
                ("secret", f"{AGENT}-gateway-api-key"),
            ]
        ),
        logs=operator.log_tail,
    )
    deployment = _get_json(k8s_cluster, "deployment", f"{AGENT}-gateway", "-n", ns)
    env, argv, mounts = gateway_env(
        deployment, _look_up(k8s_cluster, ns), read_hosts(hosts_file), tmp_path / "gateway-pod"
    )
    assert argv == ["deepagent-temporal", "serve"]
    assert env["DEEPAGENT_GRAPH"] == GRAPH and env["TEMPORAL_ADDRESS"]
    assert "@127.0.0.1:" in env["REDIS_URL"]  # the Managed Redis, with its password
    keys_file = Path(env["DEEPAGENT_GATEWAY_API_KEYS_FILE"])
    assert keys_file.parent in mounts.values()  # the operator's Secret, mounted as a file
    api_key = decode_secret_data(
        _get_json(k8s_cluster, "secret", f"{AGENT}-gateway-api-key", "-n", ns)["data"]
    )["api-key"]
    assert keys_file.read_text().strip() == api_key
    process, url = start_gateway("gateway", argv, env, tmp_path, Path(_venv_bin(argv[0])).parent)
    started.append(process)
    ready_line = process.log_tail()
    assert "redis on" in ready_line and "auth on" in ready_line, ready_line
    # the key is required (probes need none)
    assert http_status(f"{url}/threads", "POST") == 401
    assert http_status(f"{url}/threads", "POST", {"x-api-key": "wrong"}) == 401
    result = asyncio.run(stream_answer(url, api_key, GRAPH, "What is durable execution?"))
    assert result["events"][0] == "metadata" and result["events"][-1] == "end", result["events"]
    by_type: dict[str, list[str]] = {}
    for mid, text in result["texts"].items():
        by_type.setdefault(result["types"][mid], []).append(text)
    # every token once, in order: the model's two answers, and the search tool's result
    assert sorted(by_type.pop("AIMessageChunk")) == sorted([SCRIPT[0]["content"], SCRIPT[1]])
    query = SCRIPT[0]["tool_calls"][0]["args"]["query"]
    assert by_type == {"tool": [search(query)]}, result
    status = _get_json(k8s_cluster, "deepagent", AGENT, "-n", ns)["status"]
    assert status["gateway"]["endpoint"] == f"http://{AGENT}-gateway.{ns}.svc:80"
    return {"deployment": deployment, "process": process, "url": url}


def _venv_bin(name: str) -> str:
    """The console script the image puts on PATH, from this interpreter's environment."""
    return str(Path(sys.executable).parent / name)


def _stream(address: str, task_queue: str, redis_url: str) -> str:
    client = subprocess.run(
        [
            _venv_bin("deepagent-temporal"),
            "run", "--address", address, "--task-queue", task_queue,
            "--redis-url", redis_url, "What is durable execution?",
        ],
        capture_output=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")},
    )  # fmt: skip
    assert client.returncode == 0, client.stderr.decode()
    return client.stdout.decode()


def _stream_while_killing_redis(
    address: str, task_queue: str, redis_url: str, redis: ManagedProcess
) -> str:
    client = subprocess.Popen(
        [
            _venv_bin("deepagent-temporal"),
            "run", "--address", address, "--task-queue", task_queue,
            "--redis-url", redis_url, "What is durable execution?",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")},
    )  # fmt: skip
    received = b""
    deadline = time.monotonic() + 120
    try:
        # Kill Redis once the answer (the second model call) has started to stream.
        while b"Durable execution means" not in received:
            assert time.monotonic() < deadline, received.decode()
            chunk = os.read(client.stdout.fileno(), 64)
            assert chunk, f"client ended before the answer streamed: {received.decode()}"
            received += chunk
        redis.stop(grace=1.0, sig=signal.SIGKILL)
        rest, errors = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, errors.decode()
    return (received + rest).decode()
