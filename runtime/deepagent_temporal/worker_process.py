"""The ``deepagent-temporal worker`` process: load the graphs, serve them, drain on SIGTERM.

The process contract of docs/architecture.md ("Worker process"):

* **Exit codes.** 0: stopped by SIGTERM / SIGINT after draining. 1: the worker failed
  for another reason (a bug, a task queue problem...), with its message. 2: bad usage,
  bad environment value, a graph reference that cannot be loaded (whatever the module,
  attribute or factory raised), a namespace that does not exist. 3: Temporal cannot be
  reached (at start-up, or when the worker stops on it). 128 + signal: a second signal
  while draining (running activities were not waited for).
* **Errors are one line** naming what is wrong; a traceback only where it helps (a
  graph that raised: at DEBUG log level; an unexpected worker failure: always).
* **Shutdown.** SIGTERM / SIGINT: ``/readyz`` turns 503 at once (``/healthz`` stays
  200), polling stops, running activities have the grace period to finish (Temporal's
  graceful shutdown); then they are cancelled, and a node activity reports that as a
  worker shutdown, retried on another worker without counting as a failed attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Any

from deepagent_temporal.cli import (
    EXIT_RUN_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    connect,
    one_line,
)
from deepagent_temporal.contract import WorkerEnv

log = logging.getLogger("deepagent_temporal.engine.worker")


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
            # One line: the reason (exception and where it was raised) is what a user
            # reads in `kubectl logs` / a pod's last state; a traceback through importlib
            # would bury it. The traceback is logged at DEBUG.
            message = f"bad graph reference {exc.reference!r}: {exc.reason}"
            if exc.from_user_code and exc.__cause__ is not None:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("loading %s failed", ref, exc_info=exc.__cause__)
                else:
                    message += f" [traceback: {WorkerEnv.name('log_level')}=DEBUG]"
            raise CliError(message, EXIT_USAGE) from exc
    if not graphs:
        raise CliError(f"{graph_var} is empty", EXIT_USAGE)
    return graphs


def _chain_text(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return " | ".join(parts).lower()


_UNREACHABLE_HINTS = (
    "transport error",
    "connection refused",
    "connection reset",
    "tcp connect",
    "dns error",
    "broken pipe",
    "unavailable",
    "deadline",
    "timed out",
)


async def _probe_namespace(client: Any, namespace: str) -> str:
    """Ask the server about ``namespace``: ``ok``, ``not_found``, ``unreachable``,
    ``unknown`` (another answer, e.g. no permission to describe it)."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.service import RPCError, RPCStatusCode

    try:
        await asyncio.wait_for(
            client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=5)
            ),
            6,
        )
        return "ok"
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return "not_found"
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return "unreachable"
        return "unknown"
    except TimeoutError:
        return "unreachable"
    except Exception:  # noqa: BLE001 - a connection error from the core
        return "unknown"


def _no_namespace(args: argparse.Namespace) -> str:
    return (
        f"Temporal namespace {args.namespace!r} does not exist at {args.address}: "
        f"create it, or set {WorkerEnv.name('temporal_namespace')} (--namespace)"
    )


async def worker_failure(exc: BaseException, client: Any, args: argparse.Namespace) -> CliError:
    """What ``Worker.run()`` raising means for the user, as an exit code and one line.

    The namespace does not exist: 2 (configuration). Temporal cannot be reached: 3.
    Anything else (a bug, a task queue problem...): 1, with the worker's message.
    The server is asked (DescribeNamespace) rather than the message parsed, where it
    can answer.
    """
    text = _chain_text(exc)
    probe = await _probe_namespace(client, args.namespace)
    says_no_namespace = "namespace" in text and ("not found" in text or "notfound" in text)
    if probe == "not_found" or (probe != "ok" and says_no_namespace):
        return CliError(_no_namespace(args), EXIT_USAGE)
    if probe == "unreachable" or (
        probe == "unknown" and any(h in text for h in _UNREACHABLE_HINTS)
    ):
        return CliError(
            f"cannot reach Temporal at {args.address}: {one_line(exc)}", EXIT_UNREACHABLE
        )
    log.error("worker failed", exc_info=exc)
    kind = "" if type(exc) is RuntimeError else f"{type(exc).__name__}: "
    return CliError(f"worker stopped: {kind}{one_line(exc)}", EXIT_RUN_FAILED)


async def _until_started(
    worker: Any, run_task: asyncio.Task, stop: asyncio.Event, seconds: float
) -> bool:
    """Wait until the worker validated its namespace and polls (``Worker.run()`` does that
    first), failed, or a signal came; False when the server did not answer in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(seconds, 1.0)
    while not worker.is_running and not run_task.done() and not stop.is_set():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run_worker(args: argparse.Namespace) -> int:
    from deepagent_temporal.engine.worker import create_worker

    if not args.task_queue:
        raise CliError(
            f"no task queue: set {WorkerEnv.name('temporal_task_queue')} (or --task-queue)",
            EXIT_USAGE,
        )
    if args.shutdown_grace_seconds < 0:
        raise CliError(
            f"{WorkerEnv.name('shutdown_grace_seconds')} (--shutdown-grace-seconds) "
            f"must be >= 0, not {args.shutdown_grace_seconds}",
            EXIT_USAGE,
        )
    graphs = _load_graphs(args.graph)
    client = await connect(args)
    if await _probe_namespace(client, args.namespace) == "not_found":
        # (Worker.run() would fail on it too: worker_failure() maps that the same way)
        raise CliError(_no_namespace(args), EXIT_USAGE)

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
    grace = args.shutdown_grace_seconds
    worker = create_worker(
        client,
        graphs,
        args.task_queue,
        enable_token_streaming=args.token_streaming,
        redis_stream_backend=backend,
        aliases=aliases,
        # on shutdown: stop polling, give running activities this long, then cancel them
        graceful_shutdown_timeout=timedelta(seconds=grace),
    )

    state: dict[str, Any] = {"temporal": "connecting", "polling": False, "shutting_down": False}

    def ready() -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {
            "temporal": state["temporal"],
            "task_queue": args.task_queue,
            "graphs": list(graphs),
            "shutting_down": state["shutting_down"],
        }
        if backend is None:
            detail["redis"] = "disabled"
        else:
            detail["redis"] = "up" if backend.available() else "down"
        ok = state["polling"] and state["temporal"] == "connected" and not state["shutting_down"]
        return ok, detail

    stop = asyncio.Event()
    again = asyncio.Event()
    signals: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig)
        if stop.is_set():
            again.set()
        # readiness turns false at once (Kubernetes stops routing, the rollout goes on)
        state["shutting_down"] = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)

    health = None
    tasks: list[asyncio.Task] = []
    try:
        if args.health_port:
            from deepagent_temporal.health import HealthServer

            health = HealthServer(args.health_port, ready, host=args.health_host)
            try:
                await health.start()
            except OSError as exc:
                raise CliError(
                    f"cannot serve health on port {args.health_port}: {exc}", EXIT_USAGE
                ) from exc

        async def watch_temporal() -> None:
            while True:
                try:
                    ok = await asyncio.wait_for(client.service_client.check_health(), 5)
                    state["temporal"] = "connected" if ok else "unhealthy"
                except Exception:  # noqa: BLE001
                    state["temporal"] = "unreachable"
                await asyncio.sleep(5)

        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.ping()
        log.info(
            "worker starting: graphs=%s task_queue=%s temporal=%s namespace=%s redis=%s",
            list(graphs),
            args.task_queue,
            args.address,
            args.namespace,
            "on" if backend else "off",
        )
        tasks.append(asyncio.create_task(watch_temporal()))
        run_task = asyncio.create_task(worker.run())
        tasks.append(run_task)
        if not await _until_started(worker, run_task, stop, args.connect_timeout):
            raise CliError(
                f"cannot reach Temporal at {args.address}: the worker could not start "
                f"polling within {args.connect_timeout:.0f}s",
                EXIT_UNREACHABLE,
            )
        if run_task.done():
            return await _worker_ended(run_task, client, args)
        if not stop.is_set():
            state["polling"] = True
            print(
                f"deepagent-temporal worker ready: task queue {args.task_queue!r}, "
                f"graphs {list(graphs)}",
                flush=True,
            )
            stop_task = asyncio.create_task(stop.wait())
            tasks.append(stop_task)
            await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            state["polling"] = False
            if not stop.is_set():
                return await _worker_ended(run_task, client, args)
        return await _drain(worker, run_task, again, signals, grace)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        if health is not None:
            await health.stop()
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.aclose()


async def _worker_ended(run_task: asyncio.Task, client: Any, args: argparse.Namespace) -> int:
    """``Worker.run()`` returned or raised without being asked to stop."""
    exc = run_task.exception()
    if exc is None:
        raise CliError("worker stopped unexpectedly", EXIT_RUN_FAILED)
    raise await worker_failure(exc, client, args) from exc


#: after the grace period, how long cancelled activities get to report before we give up
_CANCEL_SECONDS = 15.0


async def _drain(
    worker: Any,
    run_task: asyncio.Task,
    again: asyncio.Event,
    signals: list[signal.Signals],
    grace: float,
) -> int:
    """Shut down on a signal (Temporal's graceful shutdown): stop polling at once, let
    running activities finish within ``grace`` seconds, then cancel what still runs (a
    node activity reports that as a worker shutdown: retried elsewhere, not counted as a
    failed attempt). A second signal stops waiting (exit 128 + its number)."""
    log.info(
        "%s: shutting down: polling stopped, running activities have %gs to finish",
        signals[0].name if signals else "signal",
        grace,
    )
    second = asyncio.create_task(again.wait())
    shutdown = asyncio.create_task(worker.shutdown())
    try:
        done, _ = await asyncio.wait(
            {shutdown, second},
            timeout=grace + _CANCEL_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        second.cancel()
    if shutdown not in done:
        shutdown.cancel()
        if second in done:
            log.warning(
                "%s again: exiting without waiting for running activities", signals[-1].name
            )
            return 128 + int(signals[-1])
        log.error(
            "shutdown did not complete %gs after the grace period of %gs", _CANCEL_SECONDS, grace
        )
        return EXIT_RUN_FAILED
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({run_task}, timeout=5)
    if run_task.done() and not run_task.cancelled() and run_task.exception() is not None:
        log.warning("worker reported an error while shutting down: %s", run_task.exception())
    log.info("worker stopped")
    return 0
