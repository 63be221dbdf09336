"""``deepagent-temporal`` (also ``python -m deepagent_temporal``): worker, run, demo.

Every default comes from the worker environment, :class:`~.contract.WorkerEnv` (flags
override it); ``deepagent-temporal worker --help`` lists the variables.

Exit codes: 0 ok, 1 run failed, 2 bad usage / bad graph reference, 3 Temporal
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
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


async def connect(args: argparse.Namespace) -> Any:
    """Connect to Temporal with our data converter; CliError(3) when unreachable."""
    from temporalio.client import Client
    from temporalio.service import TLSConfig

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
                data_converter=data_converter,
            ),
            timeout=args.connect_timeout,
        )
    except TimeoutError as exc:
        raise CliError(
            f"cannot connect to Temporal at {args.address}: no answer within "
            f"{args.connect_timeout:.0f}s",
            EXIT_UNREACHABLE,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - RuntimeError / RPCError from the core
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


def _load_graphs(spec: str | None) -> dict[str, Any]:
    from deepagent_temporal.engine.worker import GraphLoadError, load_graph

    graph_var = WorkerEnv.name("graph")
    if not spec:
        raise CliError(
            f"no graph to serve: set {graph_var}=package.module:attribute (or --graph)",
            EXIT_USAGE,
        )
    graphs: dict[str, Any] = {}
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for ref in (r.strip() for r in spec.split(",")):
        if not ref:
            continue
        try:
            graphs[ref] = load_graph(ref)
        except GraphLoadError as exc:
            raise CliError(f"bad graph reference: {exc}", EXIT_USAGE) from exc
    if not graphs:
        raise CliError(f"{graph_var} is empty", EXIT_USAGE)
    return graphs


async def run_worker(args: argparse.Namespace) -> int:
    from deepagent_temporal.engine.worker import create_worker

    if not args.task_queue:
        raise CliError(
            f"no task queue: set {WorkerEnv.name('temporal_task_queue')} (or --task-queue)",
            EXIT_USAGE,
        )
    graphs = _load_graphs(args.graph)
    client = await connect(args)

    backend = None
    if args.token_streaming and args.redis_url:
        from deepagent_temporal.transport.redis_writer import RedisStreamBackend

        backend = RedisStreamBackend(
            args.redis_url, maxlen=args.stream_maxlen, ttl_seconds=args.stream_ttl_seconds
        )
    aliases: dict[str, str] = {}
    for ref, graph in graphs.items():
        name = getattr(graph, "name", None)
        if name and name not in graphs and name not in aliases:
            aliases[name] = ref
    worker = create_worker(
        client,
        graphs,
        args.task_queue,
        enable_token_streaming=args.token_streaming,
        redis_stream_backend=backend,
        aliases=aliases,
        graceful_shutdown_timeout=__import__("datetime").timedelta(
            seconds=args.shutdown_grace_seconds
        ),
    )

    state: dict[str, Any] = {"temporal": "connecting", "polling": False}

    def ready() -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {
            "temporal": state["temporal"],
            "task_queue": args.task_queue,
            "graphs": list(graphs),
        }
        if backend is None:
            detail["redis"] = "disabled"
        else:
            detail["redis"] = "up" if backend.available() else "down"
        ok = state["polling"] and state["temporal"] == "connected"
        return ok, detail

    health = None
    if args.health_port:
        from deepagent_temporal.health import HealthServer

        health = HealthServer(args.health_port, ready, host=args.health_host)
        try:
            await health.start()
        except OSError as exc:
            raise CliError(
                f"cannot serve health on port {args.health_port}: {exc}", EXIT_USAGE
            ) from exc

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    async def watch_temporal() -> None:
        while True:
            try:
                ok = await asyncio.wait_for(client.service_client.check_health(), 5)
                state["temporal"] = "connected" if ok else "unhealthy"
            except Exception:  # noqa: BLE001
                state["temporal"] = "unreachable"
            await asyncio.sleep(5)

    async def probe_redis() -> None:
        if backend is None:
            return
        with contextlib.suppress(Exception):
            await backend.ping()

    log.info(
        "worker starting: graphs=%s task_queue=%s temporal=%s redis=%s",
        list(graphs),
        args.task_queue,
        args.address,
        "on" if backend else "off",
    )
    watcher = asyncio.create_task(watch_temporal())
    await probe_redis()
    run_task = asyncio.create_task(worker.run())
    # Worker.run() starts polling right away; give it a moment to fail fast
    await asyncio.sleep(0.2)
    if not run_task.done():
        state["polling"] = True
    print(
        f"deepagent-temporal worker ready: task queue {args.task_queue!r}, graphs {list(graphs)}",
        flush=True,
    )
    stop_task = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    state["polling"] = False
    if run_task in done:
        exc = run_task.exception()
        if exc is not None:
            print(f"error: worker stopped: {exc}", file=sys.stderr)
            code = EXIT_UNREACHABLE
    else:
        log.info("shutting down (draining running activities)")
        await worker.shutdown()
        with contextlib.suppress(BaseException):
            await run_task
    stop_task.cancel()
    watcher.cancel()
    if health is not None:
        await health.stop()
    if backend is not None:
        with contextlib.suppress(Exception):
            await backend.aclose()
    return code


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
            if kind == "token" and ev.get("token") and not ev.get("nostream"):
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
            return asyncio.run(run_worker(args))
        if args.command == "run":
            return asyncio.run(run_client(args))
        if args.command == "demo":
            return _demo(args)
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
