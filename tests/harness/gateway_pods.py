"""A kubelet for the gateway: runs ``deepagent-temporal serve`` from the operator's
Deployment ``<agent>-gateway`` exactly as its pod would (command, env with Secrets resolved,
the API key Secret mounted as files), and a client of it: the unmodified ``langgraph-sdk``.

Like :mod:`tests.harness.redis_pods`, three things stand in for the pod network: the process
binds to 127.0.0.1 on a free port instead of the pod's port, in-cluster Service addresses in
its env (``REDIS_URL``) are rewritten to where those services really listen (``hosts``), and a
volume mount is a local directory (a path under it in the env is moved there).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.dev.servers import ManagedProcess, free_port
from tests.harness.pods import LookUp, container_argv, container_env, local_argv, mount_volumes

N = WorkerEnv.name


def http_status(url: str, method: str = "GET", headers: Mapping[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def gateway_env(
    deployment: Mapping[str, Any], look_up: LookUp, hosts: Mapping[str, str], work_dir: Path
) -> tuple[dict[str, str], list[str], dict[str, Path]]:
    """(env, argv, mounts) of the gateway container as the kubelet would start it, made local
    (see the module docstring); the port is a free one on 127.0.0.1."""
    pod_spec = deployment["spec"]["template"]["spec"]
    [container] = pod_spec["containers"]
    env = container_env(container, look_up)
    mounts = mount_volumes(pod_spec, container, look_up, work_dir)
    for var, value in env.items():
        if value.startswith("/"):
            env[var] = local_argv([value], mounts)[0]
        for in_cluster, local in hosts.items():
            env[var] = env[var].replace(in_cluster, local)
    env[N("gateway_host")] = "127.0.0.1"
    env[N("gateway_port")] = str(free_port())
    return env, container_argv(container, env), mounts


def start_gateway(
    name: str, argv: list[str], env: Mapping[str, str], log_dir: Path, bin_dir: Path
) -> tuple[ManagedProcess, str]:
    """Start the console script of ``argv`` (from ``bin_dir``, where the image puts it on
    PATH) and wait until ``/ok`` answers and the ready line is logged (uvicorn answers a
    moment before the line is printed); -> (process, base URL)."""
    url = f"http://127.0.0.1:{env[N('gateway_port')]}"
    process = ManagedProcess(name, [str(bin_dir / argv[0]), *argv[1:]], log_dir, env=dict(env))
    process.start()
    process.wait_until(lambda: http_status(f"{url}/ok") == 200, 90)
    process.wait_until(lambda: "gateway ready" in process.log_tail(), 30)
    return process, url


async def stream_answer(url: str, api_key: str, assistant: str, question: str) -> dict[str, Any]:
    """One run through the gateway with the Python ``langgraph-sdk``, ``messages-tuple``:
    -> {"events": [...], "texts": {message id: text}, "types": {message id: type}, "run_id"}
    (types: ``AIMessageChunk`` for the model's tokens, ``tool`` for a tool's result)."""
    from langgraph_sdk import get_client

    client = get_client(url=url, api_key=api_key)
    thread = await client.threads.create()
    events: list[str] = []
    texts: dict[str, str] = {}
    types: dict[str, str] = {}
    run_id = None
    async for part in client.runs.stream(
        thread["thread_id"],
        assistant,
        input={"messages": [{"role": "user", "content": question}]},
        stream_mode="messages-tuple",
    ):
        events.append(part.event)
        if part.event == "metadata":
            run_id = part.data["run_id"]
        elif part.event == "messages":
            chunk, _metadata = part.data
            texts[chunk["id"]] = texts.get(chunk["id"], "") + chunk["content"]
            types[chunk["id"]] = chunk["type"]
    return {"events": events, "texts": texts, "types": types, "run_id": run_id}
