"""CLI argument parsing: the worker env contract (WorkerEnv), flags override env."""

from __future__ import annotations

import argparse

import pytest

from deepagent_temporal.cli import build_parser, main


def parse(monkeypatch, env, argv):
    for key in list(__import__("os").environ):
        if key.startswith(("TEMPORAL_", "DEEPAGENT_", "REDIS_")):
            monkeypatch.delenv(key, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return build_parser().parse_args(argv)


ENV = {
    "DEEPAGENT_GRAPH": "pkg.mod:agent",
    "TEMPORAL_ADDRESS": "temporal:7233",
    "TEMPORAL_NAMESPACE": "agents",
    "TEMPORAL_TASK_QUEUE": "coder",
    "TEMPORAL_API_KEY": "k",
    "TEMPORAL_TLS_CERT": "/c",
    "TEMPORAL_TLS_KEY": "/k",
    "TEMPORAL_TLS_CA": "/ca",
    "DEEPAGENT_TOKEN_STREAMING": "false",
    "REDIS_URL": "redis://:pw@redis:6379/0",
    "DEEPAGENT_STREAM_MAXLEN": "500",
    "DEEPAGENT_STREAM_TTL_SECONDS": "60",
    "DEEPAGENT_HEALTH_PORT": "8080",
    "DEEPAGENT_HEALTH_HOST": "127.0.0.1",
}


def test_worker_reads_env(monkeypatch):
    a = parse(monkeypatch, ENV, ["worker"])
    assert (a.graph, a.address, a.namespace, a.task_queue) == (
        "pkg.mod:agent",
        "temporal:7233",
        "agents",
        "coder",
    )
    assert (a.api_key, a.tls_cert, a.tls_key, a.tls_ca) == ("k", "/c", "/k", "/ca")
    assert a.token_streaming is False
    assert a.redis_url == "redis://:pw@redis:6379/0"
    assert (a.stream_maxlen, a.stream_ttl_seconds, a.health_port) == (500, 60, 8080)
    assert a.health_host == "127.0.0.1"


def test_flags_override_env(monkeypatch):
    a = parse(
        monkeypatch,
        ENV,
        [
            "worker",
            "--graph",
            "other:g",
            "--address",
            "x:1",
            "--task-queue",
            "q2",
            "--token-streaming",
            "--redis-url",
            "redis://r:1",
            "--health-port",
            "9",
        ],
    )
    assert (a.graph, a.address, a.task_queue, a.token_streaming) == ("other:g", "x:1", "q2", True)
    assert (a.redis_url, a.health_port) == ("redis://r:1", 9)


def test_defaults_without_env(monkeypatch):
    a = parse(monkeypatch, {}, ["worker"])
    assert a.address == "localhost:7233" and a.namespace == "default"
    assert a.token_streaming is True and a.redis_url is None and a.health_port is None
    assert a.health_host == "0.0.0.0", "in a pod the kubelet probes the pod IP"


def test_run_command(monkeypatch):
    a = parse(monkeypatch, {}, ["run", "--task-queue", "q", "--redis-url", "redis://r", "hello"])
    assert (a.command, a.task_queue, a.redis_url, a.message) == ("run", "q", "redis://r", "hello")


def test_usage_errors_exit_2(monkeypatch, capsys):
    parse(monkeypatch, {}, ["worker"])
    assert main(["worker"]) == 2
    assert "TEMPORAL_TASK_QUEUE" in capsys.readouterr().err
    assert main(["worker", "--task-queue", "q"]) == 2
    assert "DEEPAGENT_GRAPH" in capsys.readouterr().err


def test_negative_shutdown_grace_is_a_usage_error(monkeypatch, capsys):
    parse(monkeypatch, {}, ["worker"])
    argv = ["worker", "--task-queue", "q", "--graph", "x:y", "--shutdown-grace-seconds", "-1"]
    assert main(argv) == 2
    assert "must be >= 0" in capsys.readouterr().err


class _Namespaces:
    """A client whose DescribeNamespace answers with ``answer`` (an exception or None)."""

    def __init__(self, answer):
        self.workflow_service = self
        self.answer = answer

    async def describe_namespace(self, request, **kwargs):
        if self.answer is not None:
            raise self.answer
        return object()


def _rpc(status):
    from temporalio.service import RPCError

    return RPCError("rpc says no", status, b"")


@pytest.mark.parametrize(
    "describe, failure, code, message",
    [
        # the server says the namespace does not exist: configuration, exit 2
        (
            "NOT_FOUND",
            RuntimeError("Worker validation failed: Namespace agents was not found"),
            2,
            "Temporal namespace 'agents' does not exist at temporal:7233",
        ),
        # cannot ask the server, but the worker said so
        (
            "PERMISSION_DENIED",
            RuntimeError("Worker validation failed: Status { code: NotFound, Namespace agents"),
            2,
            "Temporal namespace 'agents' does not exist",
        ),
        # the server does not answer: exit 3, with the address
        (
            "UNAVAILABLE",
            RuntimeError("Activity worker failed"),
            3,
            "cannot reach Temporal at temporal:7233: Activity worker failed",
        ),
        (
            "PERMISSION_DENIED",
            RuntimeError("Poll failed: transport error: Connection refused"),
            3,
            "cannot reach Temporal at temporal:7233",
        ),
        # the server is there and the namespace exists: anything else is exit 1
        (
            None,
            RuntimeError("Workflow worker failed: the sandbox rejected a module"),
            1,
            "worker stopped: Workflow worker failed: the sandbox rejected a module",
        ),
        (None, KeyError("a bug"), 1, "worker stopped: KeyError: 'a bug'"),
    ],
)
async def test_a_worker_failure_maps_to_its_exit_code(describe, failure, code, message):
    """Worker.run() failing is not always "Temporal unreachable" (exit 3)."""
    from temporalio.service import RPCStatusCode

    from deepagent_temporal.worker_process import worker_failure

    answer = _rpc(getattr(RPCStatusCode, describe)) if describe else None
    args = argparse.Namespace(namespace="agents", address="temporal:7233")
    error = await worker_failure(failure, _Namespaces(answer), args)
    assert error.code == code
    assert message in str(error)
    assert "\n" not in str(error)
