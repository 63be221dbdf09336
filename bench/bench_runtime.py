"""Runtime benchmark: token latency through Temporal, worker and client in two processes.

Rows (same columns as ``bench_streaming.py``, so the tables join):

- (c) our Temporal path: ``deepagent-temporal worker`` child process without Redis,
  client ``astream(stream_mode="tokens")`` here; token batches ride workflow-stream signals
  (``DEEPAGENT_TEMPORAL_BATCH_MS``, default 50 ms) and long-poll updates.
- (d) Temporal Workflow Streams at their defaults: the official ``LangGraphPlugin`` with
  ``streaming_topic`` (node publishes every token with ``get_stream_writer()``, activity
  batch interval 100 ms), subscriber ``WorkflowStreamClient.subscribe`` (poll cooldown
  100 ms).

Latency = receive time in this process - emit time stamped in the worker when the chat
model yields the token (``ts``); same machine clock. tokens/s = tokens / (first emit ->
last receive) of a run with no model delay.

Usage: ``python bench/bench_runtime.py [--quick]``. Reusable: ``bench_temporal_path``,
``bench_workflow_streams_default``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_streaming import RATE, Row, format_table, percentiles  # noqa: E402
from langgraph.config import get_stream_writer  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from temporalio import workflow  # noqa: E402
from temporalio.contrib.workflow_streams import WorkflowStream  # noqa: E402

from deepagent_temporal.contract import WorkerEnv  # noqa: E402

TOPIC = "tokens"

# ------------------------------------------------------------------ bench graphs


class BenchState(TypedDict, total=False):
    tokens: int
    rate: float
    text: str


def _model(state: BenchState, on_token: Any = None) -> Any:
    from deepagent_temporal.dev.scripted import ScriptedChatModel

    rate = float(state.get("rate") or 0)
    return ScriptedChatModel(
        script=["x" * int(state["tokens"])],
        split="chars",
        tokens_per_second=rate or None,
        on_token=on_token,
    )


async def model_node(state: BenchState) -> dict:
    """Our runtime: a plain model call; the worker captures and streams its tokens."""
    reply = await _model(state).ainvoke("go")
    return {"text": reply.content}


async def model_node_stream_writer(state: BenchState) -> dict:
    """Official plugin: every token goes to ``get_stream_writer()`` (its streaming path)."""
    writer = get_stream_writer()
    text = []
    async for chunk in _model(state).astream("go"):
        writer({"t": chunk.content, "ts": time.time()})
        text.append(chunk.content)
    return {"text": "".join(text)}


def _graph(node: Any, execute_in: str | None = None) -> StateGraph:
    g = StateGraph(BenchState)
    g.add_node("model", node, metadata={"execute_in": execute_in} if execute_in else None)
    g.add_edge(START, "model")
    g.add_edge("model", END)
    return g


#: DEEPAGENT_GRAPH=bench_runtime:temporal_path_graph (worker for row c)
temporal_path_graph = _graph(model_node).compile(name="bench")


@workflow.defn(name="BenchWorkflowStreams", sandboxed=False)
class BenchWorkflowStreams:
    """Row d: the official plugin's own pattern (WorkflowStream in __init__)."""

    @workflow.init
    def __init__(self, state: dict) -> None:
        self.stream = WorkflowStream()

    @workflow.run
    async def run(self, state: dict) -> dict:
        from temporalio.langgraph import graph

        return await graph("bench").compile().ainvoke(state)


async def _plugin_worker(address: str, task_queue: str) -> None:
    """Child process for row d: the official LangGraphPlugin at its defaults."""
    import bench_runtime as m  # the plugin refuses functions defined in __main__
    from temporalio.client import Client
    from temporalio.langgraph import LangGraphPlugin
    from temporalio.worker import Worker

    plugin = LangGraphPlugin(
        graphs={"bench": m._graph(m.model_node_stream_writer, "activity")},
        default_activity_options={"start_to_close_timeout": timedelta(minutes=5)},
        streaming_topic=TOPIC,
    )
    client = await Client.connect(address, plugins=[plugin])
    async with Worker(client, task_queue=task_queue, workflows=[m.BenchWorkflowStreams]):
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)


# ------------------------------------------------------------------ measurements


async def _spawn(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"worker {args} exited before it was ready")
        if b"READY" in line or b"worker ready" in line:
            return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()


def _row(name: str, lat: list[float], tps: float | None, target: str, note: str) -> Row:
    p50, p99 = percentiles(lat)
    return Row(name, p50, p99, tokens_per_s=tps, note=note, target=target)


async def bench_temporal_path(
    address: str, tokens: int = 1000, rate: float = RATE, throughput_tokens: int = 20000
) -> Row:
    """(c) Temporal path (no Redis), worker in another process."""
    from temporalio.client import Client

    from deepagent_temporal import TemporalDeepAgent

    queue = f"bench-p1-{uuid.uuid4().hex[:6]}"
    proc = await _spawn(
        [sys.executable, "-m", "deepagent_temporal", "worker"],
        {
            **WorkerEnv.render(
                graph="bench_runtime:temporal_path_graph",
                temporal_address=address,
                temporal_task_queue=queue,
                log_level="WARNING",
            ),
            WorkerEnv.name("redis_url"): "",  # no Redis: the Temporal path
            "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}",
        },
    )
    try:
        client = await Client.connect(address)
        agent = TemporalDeepAgent(None, client, task_queue=queue, graph_name="bench")

        async def run(n: int, r: float) -> tuple[list[float], float]:
            lat, first, last = [], None, 0.0
            config = {"configurable": {"thread_id": f"bench-{uuid.uuid4().hex}"}}
            async for ev in agent.astream({"tokens": n, "rate": r}, config, stream_mode="tokens"):
                if ev.get("type") == "token":
                    now = time.time()
                    lat.append(now - ev["ts"])
                    first = ev["ts"] if first is None else first
                    last = now
            assert len(lat) == n, (len(lat), n)
            return lat, n / (last - first) if first else 0.0

        await run(20, 0)  # warm-up
        lat, _ = await run(tokens, rate)
        _, tps = await run(throughput_tokens, 0)
    finally:
        await _stop(proc)
    return _row(
        f"(c) Temporal path, 1 stream x {rate:g} tok/s, emit -> other process",
        lat,
        tps,
        "durable fallback",
        f"{len(lat):,} tokens; tokens/s from a {throughput_tokens:,}-token run",
    )


async def bench_workflow_streams_default(
    address: str, tokens: int = 1000, rate: float = RATE, throughput_tokens: int = 20000
) -> Row:
    """(d) Temporal Workflow Streams at the official plugin's defaults."""
    from temporalio.client import Client
    from temporalio.contrib.workflow_streams import WorkflowStreamClient

    queue = f"bench-ws-{uuid.uuid4().hex[:6]}"
    proc = await _spawn(
        [sys.executable, str(HERE / "bench_runtime.py"), "--plugin-worker", address, queue], {}
    )
    try:
        client = await Client.connect(address)

        async def run(n: int, r: float) -> tuple[list[float], float]:
            wid = f"bench-ws-{uuid.uuid4().hex}"
            handle = await client.start_workflow(
                "BenchWorkflowStreams", {"tokens": n, "rate": r}, id=wid, task_queue=queue
            )
            lat, first, last = [], None, 0.0
            stream = WorkflowStreamClient.create(client, wid)
            async for item in stream.subscribe([TOPIC]):
                now = time.time()
                lat.append(now - item.data["ts"])
                first = item.data["ts"] if first is None else first
                last = now
                if len(lat) == n:
                    break
            await handle.result()
            return lat, n / (last - first) if first else 0.0

        await run(20, 0)
        lat, _ = await run(tokens, rate)
        _, tps = await run(throughput_tokens, 0)
    finally:
        await _stop(proc)
    return _row(
        f"(d) Temporal Workflow Streams at defaults (plugin streaming_topic), 1 x {rate:g} tok/s",
        lat,
        tps,
        "baseline (the Redis path should be >= 100x faster at p50)",
        "100 ms publish batches, 100 ms poll cooldown",
    )


async def main_async(quick: bool) -> list[Row]:
    from deepagent_temporal.dev.servers import TemporalDevServer

    tokens = 300 if quick else 1000
    tput = 5000 if quick else 20000
    with TemporalDevServer() as server:
        return [
            await bench_temporal_path(server.address, tokens, throughput_tokens=tput),
            await bench_workflow_streams_default(server.address, tokens, throughput_tokens=tput),
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plugin-worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plugin_worker:
        asyncio.run(_plugin_worker(*args.plugin_worker))
        return 0
    print(format_table(asyncio.run(main_async(args.quick))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
