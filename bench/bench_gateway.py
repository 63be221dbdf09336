"""Gateway benchmark: token latency through ``deepagent-temporal serve`` (SSE) against a
direct ``astream`` client reading the same run, concurrent SSE streams, CPU per token.

Prints one markdown table. Setup: a Temporal dev server, redis-server, one worker
process serving a one-model-call graph (the model waits 1 s, then streams ``--tokens``
tokens at ``--rate`` tokens/s), the gateway as its own process. Every run is read at the
same time by a direct ``TemporalDeepAgent.ajoin(stream_mode="tokens")`` in this process
(its events carry the worker's emit time ``ts``) and by SSE clients joining
``GET /threads/{tid}/runs/{rid}/stream?stream_mode=messages-tuple``; a gateway token is
matched to its emit time by (message id, text offset). Latency = receive time - emit
time, both ``time.time()`` on this machine. At most ``--per-run`` SSE clients read one
run (Temporal bounds in-flight updates per workflow, and every stream long-polls one).

The rows: 1, 100 and 500 streams at ``--rate`` tokens/s per run, then 500 streams at
``--light-rate`` (each run's rate comes with the run, as ``config.configurable.rate``).

Usage: ``python bench/bench_gateway.py [--quick] [--streams N ...] [--rate R]
[--light-rate R] [--tokens T]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_streaming import Row, format_table, percentiles  # noqa: E402
from deepagent_temporal.contract import WorkerEnv  # noqa: E402

GRAPH = "bench.bench_gateway:graph"
_TOKENS = int(os.environ.get("BENCH_GATEWAY_TOKENS", "200"))
_RATE = float(os.environ.get("BENCH_GATEWAY_RATE", "100"))


def _graph() -> Any:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END, START, MessagesState, StateGraph

    from deepagent_temporal.dev.scripted import ScriptedChatModel

    async def answer(state: MessagesState, config: RunnableConfig) -> dict:
        configurable = config.get("configurable", {})
        model = ScriptedChatModel(
            responder=lambda msgs: " ".join(f"t{i}" for i in range(_TOKENS)),
            token_delay=1.0 / float(configurable.get("rate") or _RATE),
        )
        # every reader is attached before the first token
        await asyncio.sleep(float(configurable.get("start_delay") or 1.0))
        return {"messages": [await model.ainvoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("answer", answer)
    g.add_edge(START, "answer")
    g.add_edge("answer", END)
    return g.compile(name="bench_gateway")


graph = _graph() if __name__ != "__main__" else None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sse_tokens(http: Any, path: str, out: dict[Any, float]) -> None:
    """Join an SSE stream; record (message id, text offset) -> receive time, and under
    ``"attached"`` when its first event came."""
    import orjson

    offsets: dict[str, int] = {}
    event = None
    async with http.stream("GET", path, params={"stream_mode": "messages-tuple"}) as res:
        async for line in res.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                out.setdefault("attached", time.time())
            elif line.startswith("data: ") and event == "messages":
                now = time.time()
                chunk = orjson.loads(line[6:])[0]
                mid = chunk["id"]
                offsets[mid] = offsets.get(mid, 0) + len(chunk["content"])
                out[(mid, offsets[mid])] = now
            elif line.startswith("data: ") and event in ("end", "error"):
                return


async def _direct_tokens(agent: Any, thread_id: str, out: dict[tuple[str, int], tuple]) -> None:
    offsets: dict[str, int] = {}
    config = {"configurable": {"thread_id": thread_id}}
    async for ev in agent.ajoin(config, stream_mode="tokens"):
        if ev.get("type") in ("token", "snapshot") and ev.get("token"):
            now = time.time()
            mid = ev["message_id"]
            offsets[mid] = offsets.get(mid, 0) + len(ev["token"])
            out[(mid, offsets[mid])] = (ev["ts"], now)


async def _one_run(
    http: Any, agent: Any, clients: int, rate: float, start_delay: float = 1.0
) -> tuple[list[float], list[float], int, int]:
    tid = f"bench-{uuid.uuid4().hex[:12]}"
    await http.post("/threads", json={"thread_id": tid})
    run = (
        await http.post(
            f"/threads/{tid}/runs",
            json={
                "assistant_id": "bench_gateway",
                "input": {"messages": [("user", "go")]},
                "config": {"configurable": {"rate": rate, "start_delay": start_delay}},
            },
        )
    ).json()
    direct: dict[tuple[str, int], tuple] = {}
    gw: list[dict[Any, float]] = [{} for _ in range(clients)]
    path = f"/threads/{tid}/runs/{run['run_id']}/stream"
    await asyncio.gather(
        _direct_tokens(agent, tid, direct), *(_sse_tokens(http, path, g) for g in gw)
    )
    direct_lat = [recv - ts for ts, recv in direct.values()]
    # a token emitted before its stream attached is a join's replay, not latency
    gw_lat, early = [], 0
    for g in gw:
        attached = g.pop("attached", 0.0)
        for k, recv in g.items():
            if k in direct and direct[k][0] >= attached:
                gw_lat.append(recv - direct[k][0])
            else:
                early += 1
    return direct_lat, gw_lat, sum(len(g) for g in gw), early


async def main_async(args: argparse.Namespace) -> list[Row]:
    import httpx
    from temporalio.client import Client

    from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent
    from deepagent_temporal.converter import with_data_converter
    from deepagent_temporal.dev.servers import (
        ManagedProcess,
        RedisServer,
        TemporalDevServer,
        free_port,
    )
    from deepagent_temporal.dev.workerproc import WorkerProcess

    logs = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    for sub in ("temporal", "redis", "worker", "gateway"):
        (logs / sub).mkdir()
    temporal = TemporalDevServer(log_dir=logs / "temporal")
    redis = RedisServer(log_dir=logs / "redis")
    temporal.start()
    redis.start()
    queue = f"bench-gateway-{uuid.uuid4().hex[:6]}"
    graph_env = {"BENCH_GATEWAY_TOKENS": str(args.tokens), "BENCH_GATEWAY_RATE": str(args.rate)}
    worker = WorkerProcess(
        GRAPH, temporal.address, queue, redis_url=redis.url, log_dir=logs / "worker", env=graph_env
    )
    port = free_port()
    gateway = ManagedProcess(
        "gateway",
        [sys.executable, "-m", "deepagent_temporal", "serve"],
        logs / "gateway",
        env={
            **graph_env,
            **WorkerEnv.render(
                graph=GRAPH,
                temporal_address=temporal.address,
                temporal_task_queue=queue,
                redis_url=redis.url,
                gateway_host="127.0.0.1",
                gateway_port=port,
            ),
        },
    )
    rows: list[Row] = []
    try:
        worker.start()
        gateway.start()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits
        ) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/ok")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            client = with_data_converter(await Client.connect(temporal.address))
            agent = TemporalDeepAgent(
                None,
                client,
                task_queue=queue,
                graph_name=GRAPH,
                redis_stream_backend=RedisStreamBackend(redis.url),
            )
            await _one_run(http, agent, 1, args.rate)  # warm-up
            # the rows at --rate, then the largest number of streams at --light-rate: what
            # one gateway process adds when the machine is not saturated (on 2 cores, 500
            # streams at 50 tokens/s each need more CPU than the gateway, the worker,
            # Temporal and the readers have together)
            loads = [(n, args.rate) for n in [1, *args.streams]]
            if args.light_rate and args.streams:
                loads.append((max(args.streams), args.light_rate))
            for streams, rate in loads:
                runs = max(1, -(-streams // args.per_run))
                per_run = [streams // runs + (i < streams % runs) for i in range(runs)]
                cpu0, t0 = _cpu_seconds(gateway.pid), time.perf_counter()
                # the model starts once every stream can have attached (500 need seconds)
                delay = max(1.0, streams / 100)
                results = await asyncio.gather(
                    *(_one_run(http, agent, n, rate, delay) for n in per_run)
                )
                cpu = _cpu_seconds(gateway.pid) - cpu0
                elapsed = time.perf_counter() - t0
                direct = [x for r in results for x in r[0]]
                gw = [x for r in results for x in r[1]]
                delivered = sum(r[2] for r in results)
                early = sum(r[3] for r in results)
                dp50, dp99 = percentiles(direct)
                gp50, gp99 = percentiles(gw)
                rows.append(
                    Row(
                        f"direct astream (tokens), {runs} run(s) x {rate:g} tok/s",
                        dp50,
                        dp99,
                        note=f"{len(direct):,} tokens; the baseline of the next row",
                    )
                )
                rows.append(
                    Row(
                        f"gateway SSE messages-tuple, {streams} concurrent stream(s) over {runs} run(s)",
                        gp50,
                        gp99,
                        tokens_per_s=delivered / elapsed,
                        target="+1 ms p50, +10 ms p99 at 500 streams",
                        note=f"{len(gw):,} tokens ({early:,} emitted before their stream "
                        f"attached: not counted); added p50 {gp50 - dp50:+.2f} ms, "
                        f"p99 {gp99 - dp99:+.2f} ms; gateway CPU per token "
                        f"{cpu / max(delivered, 1) * 1e6:.0f} us",
                    )
                )
    finally:
        gateway.stop()
        worker.stop()
        redis.stop()
        temporal.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 50 streams")
    parser.add_argument("--streams", type=int, nargs="*", default=None)
    parser.add_argument("--per-run", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s of each run")
    parser.add_argument(
        "--light-rate",
        type=float,
        default=5.0,
        help="tokens/s of each run in a last row at the most streams (0: no such row)",
    )
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    if args.streams is None:
        args.streams = [50] if args.quick else [100, 500]
    rows = asyncio.run(main_async(args))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
