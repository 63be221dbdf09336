"""``deepagent-temporal`` (also ``python -m deepagent_temporal``): worker, run, demo.

Every default comes from the worker environment, :class:`~.contract.WorkerEnv` (flags
override it); ``deepagent-temporal worker --help`` lists the variables.

Exit codes: 0 ok (a worker: stopped by SIGTERM / SIGINT after draining), 1 run failed
(a worker: failed for another reason), 2 bad usage, bad graph reference, bad environment
value or a namespace that does not exist, 3 Temporal unreachable; 128 + the signal's
number: a worker told to stop twice (it did not wait for its running activities).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from deepagent_temporal.contract import EnvError, WorkerEnv

EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

log = logging.getLogger("deepagent_temporal.engine.worker")


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}", EXIT_USAGE) from exc


def _add_connection_args(p: argparse.ArgumentParser, env: WorkerEnv) -> None:
    p.add_argument("--address", default=env.temporal_address)
    p.add_argument("--namespace", default=env.temporal_namespace)
    p.add_argument("--task-queue", default=env.temporal_task_queue)
    p.add_argument("--api-key", default=env.temporal_api_key)
    p.add_argument("--tls-cert", default=env.temporal_tls_cert)
    p.add_argument("--tls-key", default=env.temporal_tls_key)
    p.add_argument("--tls-ca", default=env.temporal_tls_ca)
    p.add_argument("--redis-url", default=env.redis_url)
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=env.connect_timeout,
        help="seconds to wait for the Temporal server before giving up",
    )


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc``'s message on one line (at most ``limit`` characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def connect(args: argparse.Namespace) -> Any:
    """Connect to Temporal with our data converter (with the payload storage the env
    configures, for the worker and the `run` client alike); CliError(3) when unreachable."""
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode, TLSConfig

    from deepagent_temporal import storage
    from deepagent_temporal.converter import data_converter

    tls: Any = False
    if args.tls_cert or args.tls_key or args.tls_ca:
        tls = TLSConfig(
            client_cert=_read(args.tls_cert),
            client_private_key=_read(args.tls_key),
            server_root_ca_cert=_read(args.tls_ca),
        )
    elif args.api_key:
        tls = True
    try:
        return await asyncio.wait_for(
            Client.connect(
                args.address,
                namespace=args.namespace,
                api_key=args.api_key or None,
                tls=tls,
                data_converter=storage.apply(data_converter),
            ),
            timeout=args.connect_timeout,
        )
    except TimeoutError as exc:
        raise CliError(
            f"cannot connect to Temporal at {args.address}: no answer within "
            f"{args.connect_timeout:.0f}s",
            EXIT_UNREACHABLE,
        ) from exc
    except RPCError as exc:
        if exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            raise CliError(
                f"Temporal at {args.address} refused the credentials: {one_line(exc)}",
                EXIT_USAGE,
            ) from exc
        raise CliError(
            f"cannot connect to Temporal at {args.address} (namespace {args.namespace}): "
            f"{one_line(exc)}",
            EXIT_UNREACHABLE,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - RuntimeError from the core
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(
            f"cannot connect to Temporal at {args.address} (namespace {args.namespace}): {first}",
            EXIT_UNREACHABLE,
        ) from exc


# ------------------------------------------------------------------------- worker


def _worker_parser(sub: Any, env: WorkerEnv) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker for the graphs of the worker environment",
        epilog=WorkerEnv.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--graph",
        default=env.graph,
        help="package.module:attribute of a compiled graph or zero-arg factory "
        "(several separated by commas)",
    )
    _add_connection_args(p, env)
    p.add_argument(
        "--token-streaming",
        dest="token_streaming",
        action=argparse.BooleanOptionalAction,
        default=env.token_streaming,
    )
    p.add_argument("--stream-maxlen", type=int, default=env.stream_maxlen)
    p.add_argument("--stream-ttl-seconds", type=int, default=env.stream_ttl_seconds)
    p.add_argument("--health-port", type=int, default=env.health_port)
    p.add_argument(
        "--health-host",
        default=env.health_host,
        help="address the health server binds (pods: all interfaces; local runs: 127.0.0.1)",
    )
    p.add_argument("--shutdown-grace-seconds", type=float, default=env.shutdown_grace_seconds)


# ---------------------------------------------------------------------------- run


def _run_parser(sub: Any, env: WorkerEnv) -> None:
    p = sub.add_parser("run", help="start a run and print its tokens live")
    _add_connection_args(p, env)
    p.add_argument(
        "--graph", default=None, help="graph name on the worker (default: its only graph)"
    )
    p.add_argument("--thread-id", default=None)
    p.add_argument("message")


async def run_client(args: argparse.Namespace) -> int:
    from deepagent_temporal.client.agent import RunFailedError, TemporalDeepAgent

    if not args.task_queue:
        raise CliError(
            f"--task-queue (or {WorkerEnv.name('temporal_task_queue')}) is required", EXIT_USAGE
        )
    client = await connect(args)
    backend = None
    if args.redis_url:
        from deepagent_temporal.transport.redis_writer import RedisStreamBackend

        backend = RedisStreamBackend(args.redis_url)
    agent = TemporalDeepAgent(
        None,
        client,
        task_queue=args.task_queue,
        redis_stream_backend=backend,
        graph_name=args.graph,
    )
    thread_id = args.thread_id or f"run-{uuid.uuid4().hex[:12]}"
    config = {"configurable": {"thread_id": thread_id}}
    inp = {"messages": [{"role": "user", "content": args.message}]}
    started = time.perf_counter()
    tokens = 0
    try:
        async for ev in agent.astream(inp, config, stream_mode="tokens"):
            kind = ev.get("type")
            if kind in ("token", "snapshot") and ev.get("token") and not ev.get("nostream"):
                tokens += 1
                sys.stdout.write(ev["token"])
                sys.stdout.flush()
            elif kind == "llm_end":
                sys.stdout.write("\n")
            elif kind == "reset":
                sys.stdout.write("\n[attempt failed, retrying]\n")
                sys.stdout.flush()
    except RunFailedError as exc:
        print(f"\nerror: run {thread_id} failed: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    finally:
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.aclose()
    elapsed = time.perf_counter() - started
    print(f"\n[run {thread_id} completed: {tokens} tokens in {elapsed:.2f}s]", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------- serve


def _serve_parser(sub: Any, env: WorkerEnv) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP/SSE gateway speaking the LangGraph Agent Server protocol (docs/gateway.md)",
    )
    p.add_argument(
        "--graph", default=env.graph, help="the graphs the workers serve (assistants), as theirs"
    )
    _add_connection_args(p, env)
    p.add_argument("--host", default=env.gateway_host)
    p.add_argument("--port", type=int, default=env.gateway_port)
    p.add_argument("--api-keys-file", default=env.gateway_api_keys_file)


async def _serve(args: argparse.Namespace) -> int:
    try:
        from deepagent_temporal.gateway.server import serve
    except ImportError as exc:
        raise CliError(
            f"serve needs the gateway extra (pip install 'deepagent-temporal[gateway]'): {exc}",
            EXIT_USAGE,
        ) from exc
    for value, field in ((args.task_queue, "temporal_task_queue"), (args.graph, "graph")):
        if not value:
            raise CliError(f"serve needs {WorkerEnv.name(field)} (or its flag)", EXIT_USAGE)
    _read(args.api_keys_file)  # CliError(2) when it cannot be read
    client = await connect(args)
    return await serve(
        client,
        graph=args.graph,
        task_queue=args.task_queue,
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        api_keys_file=args.api_keys_file,
    )


# --------------------------------------------------------------------------- main


def build_parser(env: WorkerEnv | None = None) -> argparse.ArgumentParser:
    """The CLI; its defaults come from ``env`` (default: the process environment)."""
    env = WorkerEnv.from_env() if env is None else env
    parser = argparse.ArgumentParser(
        prog="deepagent-temporal",
        description="Durable LangGraph / Deep Agents runs on Temporal with token streaming.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _worker_parser(sub, env)
    _run_parser(sub, env)
    _serve_parser(sub, env)
    d = sub.add_parser("demo", help="local Temporal + Redis + worker + example agent, one run")
    d.add_argument("--failover", action="store_true", help="kill Redis mid-answer")
    d.add_argument("question", nargs="?", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Invoked as a program (``argv`` None), it ends the process.

    The process ends with ``os._exit`` once everything is flushed: Temporal's native
    runtime threads can abort a normal interpreter shutdown (SIGABRT) on a loaded
    machine, which would turn a clean exit code into a crash.
    """
    code = _main(argv)
    try:
        hard_exit = not WorkerEnv.from_env().no_hard_exit
    except EnvError:
        hard_exit = True
    if argv is None and hard_exit:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    try:
        env = WorkerEnv.from_env()
    except EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(env)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=env.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "worker":
            from deepagent_temporal.worker_process import run_worker

            return asyncio.run(run_worker(args))
        if args.command == "run":
            return asyncio.run(run_client(args))
        if args.command == "demo":
            return _demo(args)
        if args.command == "serve":
            return asyncio.run(_serve(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _demo(args: argparse.Namespace) -> int:
    try:
        from deepagent_temporal.dev import demo
    except ImportError:
        print("deepagent-temporal demo: not yet implemented", file=sys.stderr)
        return EXIT_USAGE
    kwargs: dict[str, Any] = {"failover": args.failover}
    if args.question:
        kwargs["question"] = args.question
    return demo.run_demo(**kwargs)
