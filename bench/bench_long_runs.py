"""Long runs: a 1,000-step agent loop stays durable (continue-as-new, payloads in S3).

The graph is ``deepagent_temporal.examples.shapes:long_loop``: ``think`` (a short
streamed model reply) then ``tool`` (a note of pseudo-random, Zipf-distributed words,
like a file-reading tool's output; the state compresses 3.5x with zstd) in a loop. The
worker runs in its own process with Redis (token streaming on) and payload storage on a real
SeaweedFS (S3 API), zstd compression, at the default history budget (10 MB / 10,000
events per run) and the default storage threshold (16 KiB; a second row at 1 KiB, where
every payload but the smallest goes to the bucket: the floor of history per step).

Steps: a *LangGraph step* is one superstep, here one node run (``think`` or ``tool``), the
unit of ``recursion_limit`` and of the issue's measurements (history grew with every node's
input and output). The loop's ``limit`` counts think + tool *iterations*, two LangGraph
steps each; per-step figures are printed for both.

Rows:

1. 1,000 iterations (2,000 LangGraph steps), 4 KB outputs, a client streaming every token:
   wall time per step against in-process LangGraph (``long_loop.ainvoke``, same graph,
   same model); history of every run of the continue-as-new chain (fetched), history
   bytes per step (goal <= 2 KB); the client's tokens are checked exactly once against
   the final messages.
2. 200 iterations, 64 KB outputs (the state passes 12 MB): completes.
3. 1,000 iterations, a worker SIGKILLed mid-node around iteration 500, a second worker
   takes over: executions per (node, iteration) counted by the graph itself (a file each
   execution appends to): only the interrupted node runs twice; the stream is still
   exactly once.
4. 200 iterations, 4 KB outputs, with storage and without (the state stays under 2 MB, so
   both complete): what payload storage changes in time and history.
5. Compression of the long-loop state (one activity input at step 1,000) with zstd and
   zlib, against none.

Usage: ``python bench/bench_long_runs.py [--quick]`` (``--quick``: 200 / 40 / 200
iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from langchain_core.messages import AIMessage  # noqa: E402
from temporalio.client import Client  # noqa: E402

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent  # noqa: E402
from deepagent_temporal import storage as payload_storage  # noqa: E402
from deepagent_temporal.contract import WorkerEnv  # noqa: E402
from deepagent_temporal.converter import data_converter  # noqa: E402
from deepagent_temporal.dev.histories import chain_histories  # noqa: E402
from deepagent_temporal.dev.servers import RedisServer, TemporalDevServer  # noqa: E402
from deepagent_temporal.dev.workerproc import WorkerProcess  # noqa: E402
from tests.harness.s3 import SeaweedFS  # noqa: E402

GRAPH = "deepagent_temporal.examples.shapes:long_loop"
BUDGET_BYTES = 10_000_000  # WorkerEnv.history_max_bytes default
BUDGET_EVENTS = 10_000
BIG_EVENTS = 1_000
#: LangGraph steps (node runs) per think + tool iteration of the loop
STEPS_PER_ITERATION = 2


def _texts(events: list[dict]) -> tuple[dict[str, str], int]:
    """Text per message id, and how many (message, index) tokens came more than once."""
    seen = Counter(
        (e["message_id"], e["index"]) for e in events if e["type"] in ("token", "snapshot")
    )
    texts: dict[str, str] = {}
    for e in events:
        if e["type"] in ("token", "snapshot"):
            texts[e["message_id"]] = texts.get(e["message_id"], "") + e["token"]
    return texts, sum(1 for n in seen.values() if n > 1)


class Bench:
    def __init__(self, temporal: TemporalDevServer, redis: RedisServer, s3: SeaweedFS) -> None:
        self.temporal, self.redis, self.s3 = temporal, redis, s3
        self.bucket = s3.create_bucket()
        self.storage_env = s3.env(self.bucket)
        self.log_dir = Path(tempfile.mkdtemp(prefix="bench-long-runs-"))
        self.workers: list[WorkerProcess] = []

    async def client(self) -> Client:
        settings = payload_storage.PayloadStorage.from_env(WorkerEnv.from_env(self.storage_env))
        return await Client.connect(
            self.temporal.address,
            data_converter=payload_storage.apply(data_converter, settings),
        )

    def worker(self, task_queue: str, name: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            GRAPH,
            self.temporal.address,
            task_queue,
            redis_url=self.redis.url,
            log_dir=self.log_dir / name,
            env={**self.storage_env, **env},
            name=name,
        )
        (self.log_dir / name).mkdir(parents=True, exist_ok=True)
        self.workers.append(worker)
        return worker.start()

    def usage(self) -> tuple[int, int]:
        return self.s3.usage(self.bucket)

    def stored_since(self, before: tuple[int, int]) -> str:
        objects, size = self.usage()
        return f"+{objects - before[0]} objects, +{(size - before[1]) / 1e9:.2f} GB"

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    async def run(
        self, client: Client, task_queue: str, inp: dict
    ) -> tuple[dict, float, list[dict], str]:
        agent = TemporalDeepAgent(
            None,
            client,
            task_queue=task_queue,
            graph_name=GRAPH,
            redis_stream_backend=RedisStreamBackend(self.redis.url),
        )
        thread = f"long-{uuid.uuid4().hex}"
        config = {"configurable": {"thread_id": thread}, "recursion_limit": 100_000}
        events: list[dict] = []
        started = time.perf_counter()
        async for ev in agent.astream(inp, config, stream_mode="tokens", timeout=3600):
            events.append(ev)
        elapsed = time.perf_counter() - started
        state = await agent.get_state(config)
        return state.values, elapsed, events, thread


_BASELINES: dict[tuple[int, int], float] = {}


async def in_process_seconds(steps: int, note_bytes: int) -> float:
    if (steps, note_bytes) not in _BASELINES:
        _BASELINES[steps, note_bytes] = await _in_process_seconds(steps, note_bytes)
    return _BASELINES[steps, note_bytes]


async def _in_process_seconds(steps: int, note_bytes: int) -> float:
    from deepagent_temporal.examples.shapes import long_loop

    inp = {"limit": steps, "note_bytes": note_bytes, "note_kind": "text"}
    started = time.perf_counter()
    await long_loop.ainvoke(inp, {"recursion_limit": 100_000})
    return time.perf_counter() - started


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 64))
            return f.read().decode()
    except FileNotFoundError:
        return ""


def check_stream(values: dict, events: list[dict]) -> str:
    texts, duplicates = _texts(events)
    ai = {m.id: m.content for m in values["messages"] if isinstance(m, AIMessage)}
    if duplicates or texts != ai:
        missing = sum(1 for k, v in ai.items() if texts.get(k) != v)
        return f"NOT exactly once ({duplicates} duplicated, {missing} messages differ)"
    return f"exactly once ({sum(len(t) for t in texts.values())} chars, {len(ai)} calls)"


async def history_note(client: Client, thread: str, steps: int) -> tuple[str, float, bool]:
    runs = await chain_histories(client, thread)
    total = sum(r.size_bytes for r in runs)
    biggest = max(runs, key=lambda r: r.size_bytes)
    within = all(r.size_bytes <= BUDGET_BYTES + 2_000_000 for r in runs)
    note = (
        f"{len(runs)} runs; largest {biggest.size_bytes / 1e6:.2f} MB / "
        f"{max(r.events for r in runs)} events (budget 10 MB / 10,000); "
        f"total {total / 1e6:.2f} MB"
    )
    return note, total / steps, within


async def scenario_long(
    bench: Bench, client: Client, steps: int, threshold: int | None = None
) -> list[str]:
    tq = f"long-{uuid.uuid4().hex[:6]}"
    env = {WorkerEnv.name("payload_threshold_bytes"): str(threshold)} if threshold else {}
    bench.worker(tq, f"worker-long-{threshold or 'default'}", **env)
    before = bench.usage()
    values, elapsed, events, thread = await bench.run(
        client, tq, {"limit": steps, "note_bytes": 4096, "note_kind": "text"}
    )
    assert values["steps"] == steps, values["steps"]
    stored = bench.stored_since(before)
    baseline = await in_process_seconds(steps, 4096)
    note, per_step, within = await history_note(client, thread, steps)
    overhead_ms = (elapsed - baseline) / steps * 1000
    threshold_text = f"threshold {threshold} B" if threshold else "default threshold 16 KiB"
    lg = STEPS_PER_ITERATION
    return [
        f"| {_iterations(steps)} x 4 KB, streaming, storage ({threshold_text}) | completed | "
        f"{elapsed:.1f} s ({elapsed / steps / lg * 1000:.1f} ms/step) | in-process LangGraph "
        f"{baseline:.1f} s ({baseline / steps / lg * 1000:.2f} ms/step): "
        f"**+{overhead_ms / lg:.1f} ms/step** | **{per_step / lg / 1000:.2f} KB/step** "
        f"(goal <= 2; {per_step / 1000:.2f} KB per iteration) | "
        f"{'within budget' if within else 'OVER BUDGET'}: {note}; bucket {stored} | "
        f"{check_stream(values, events)} |"
    ]


def _iterations(n: int) -> str:
    return f"{n:,} iterations ({n * STEPS_PER_ITERATION:,} LangGraph steps)"


async def scenario_without_storage(bench: Bench, steps: int) -> list[str]:
    """The same loop, short enough to fit without storage: what storage changes."""
    tq = f"plain-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(
        GRAPH, bench.temporal.address, tq, redis_url=bench.redis.url, log_dir=bench.log_dir
    )
    bench.workers.append(worker)
    worker.start()
    client = await Client.connect(bench.temporal.address, data_converter=data_converter)
    values, elapsed, events, thread = await bench.run(
        client, tq, {"limit": steps, "note_bytes": 4096, "note_kind": "text"}
    )
    baseline = await in_process_seconds(steps, 4096)
    note, per_step, within = await history_note(client, thread, steps)
    overhead_ms = (elapsed - baseline) / steps * 1000
    lg = STEPS_PER_ITERATION
    return [
        f"| {_iterations(steps)} x 4 KB, streaming, **no storage** | completed | "
        f"{elapsed:.1f} s ({elapsed / steps / lg * 1000:.1f} ms/step) | "
        f"+{overhead_ms / lg:.1f} ms/step | {per_step / lg / 1000:.2f} KB/step | "
        f"{'within budget' if within else 'OVER BUDGET'}: "
        f"{note} | {check_stream(values, events)} |"
    ]


async def scenario_big(bench: Bench, client: Client, steps: int) -> list[str]:
    tq = f"big-{uuid.uuid4().hex[:6]}"
    # a smaller events budget: a replay (failover, a query once the run is over)
    # re-encodes every node input of the run, and these are up to 13 MB
    bench.worker(tq, "worker-big", **{WorkerEnv.name("history_max_events"): str(BIG_EVENTS)})
    before = bench.usage()
    values, elapsed, events, thread = await bench.run(
        client, tq, {"limit": steps, "note_bytes": 65536, "note_kind": "text"}
    )
    assert values["steps"] == steps and len(values["notes"]) == steps
    stored = bench.stored_since(before)
    state_mb = sum(len(n) for n in values["notes"]) / 1e6
    note, per_step, within = await history_note(client, thread, steps)
    return [
        f"| {_iterations(steps)} x 64 KB (state {state_mb:.1f} MB), storage, budget "
        f"{BIG_EVENTS} events | completed | "
        f"{elapsed:.1f} s ({elapsed / steps / STEPS_PER_ITERATION * 1000:.1f} ms/step) | - | "
        f"{per_step / STEPS_PER_ITERATION / 1000:.2f} KB/step | {'within budget' if within else 'OVER BUDGET'}: "
        f"{note}; bucket {stored} | {check_stream(values, events)} |"
    ]


async def scenario_kill(bench: Bench, client: Client, steps: int) -> list[str]:
    tq = f"kill-{uuid.uuid4().hex[:6]}"
    log = bench.log_dir / "executions.log"
    fast = {WorkerEnv.name("heartbeat_timeout_seconds"): "2"}
    first = bench.worker(tq, "worker-a", **fast)
    kill_at = steps // 2
    inp = {
        "limit": steps,
        "note_bytes": 4096,
        "note_kind": "text",
        "exec_log": str(log),
        "tool_seconds": 0.05,
    }
    task = asyncio.create_task(bench.run(client, tq, inp))
    while not task.done():  # kill once the tool of step kill_at runs (it sleeps 50 ms)
        if _log_tail(log).endswith(f"tool {kill_at}\n"):
            os.killpg(first.process.pid, signal.SIGKILL)
            break
        await asyncio.sleep(0.005)
    bench.worker(tq, "worker-b", **fast)
    values, elapsed, events, _ = await task
    assert values["steps"] == steps
    counts = Counter(line.strip() for line in log.read_text().splitlines() if line.strip())
    twice = sorted((k for k, n in counts.items() if n > 1), key=lambda k: int(k.split()[1]))
    missing = [
        f"{node} {s}"
        for s in range(1, steps + 1)
        for node in ("think", "tool")
        if counts[f"{node} {s}"] == 0
    ]
    verdict = (
        "only the interrupted node re-ran"
        if len(twice) <= 1 and not missing
        else f"RE-RAN {twice[:5]} MISSING {missing[:5]}"
    )
    return [
        f"| {_iterations(steps)}, worker SIGKILLed at iteration {kill_at}, second worker | "
        f"completed | "
        f"{elapsed:.1f} s | - | - | executions: {len(counts)} (node, step) pairs, "
        f"re-executed: {', '.join(twice) or 'none'}; {verdict} | {check_stream(values, events)} |"
    ]


def compression_rows(steps: int) -> list[str]:
    import zstandard
    from langchain_core.messages import AIMessage as AI

    from deepagent_temporal.examples.shapes import loop_note

    state = {
        "steps": steps,
        "notes": [loop_note(s, 4096, "text") for s in range(1, steps + 1)],
        "messages": [
            AI(content=f"Thinking about step {s}, then the tool.", id=f"run-{s:036d}")
            for s in range(1, steps + 1)
        ],
    }
    from deepagent_temporal.converter import LangGraphPayloadConverter
    from deepagent_temporal.engine.activity import NodeActivityOutput

    encode = LangGraphPayloadConverter().to_payload  # no size guard: the state passes 2 MB
    raw = encode(state).SerializeToString()
    result = NodeActivityOutput(result={"steps": 1, "notes": [loop_note(1, 4096, "text")]})
    one = encode(result).SerializeToString()  # what the tool's activity returns
    rows = [f"| none | {len(raw) / 1e6:.2f} MB | 1.0x | - | {len(one)} B |"]
    for name, fn in (
        ("zstd (level 3, default)", lambda b: zstandard.ZstdCompressor(level=3).compress(b)),
        ("zlib (level 6)", lambda b: zlib.compress(b, 6)),
    ):
        started = time.perf_counter()
        packed = fn(raw)
        ms = (time.perf_counter() - started) * 1000
        rows.append(
            f"| {name} | {len(packed) / 1e6:.2f} MB | {len(raw) / len(packed):.1f}x | "
            f"{ms:.1f} ms | {len(fn(one))} B |"
        )
    return rows


async def main(quick: bool) -> None:
    long_steps, big_steps, kill_steps = (200, 40, 200) if quick else (1000, 200, 1000)
    short_steps = 100 if quick else 200  # fits without storage (state under 2 MB)
    with TemporalDevServer() as temporal, RedisServer() as redis, SeaweedFS() as s3:
        bench = Bench(temporal, redis, s3)
        try:
            client = await bench.client()
            rows = []
            for label, scenario in (
                ("long", scenario_long(bench, client, long_steps)),
                ("long, threshold 1 KiB", scenario_long(bench, client, long_steps, 1024)),
                ("short, storage", scenario_long(bench, client, short_steps)),
                ("short, no storage", scenario_without_storage(bench, short_steps)),
                ("big", scenario_big(bench, client, big_steps)),
                ("worker killed", scenario_kill(bench, client, kill_steps)),
            ):
                try:
                    rows += await scenario
                except Exception as exc:  # noqa: BLE001 - report it, go on
                    rows.append(f"| {label} | **failed**: {type(exc).__name__}: {exc} | | | | | |")
        finally:
            bench.stop()
    print(
        "| run | outcome | wall time | overhead vs in-process LangGraph | history per LangGraph step "
        "| history | stream |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(f"Compression of one activity input at step {long_steps} (4 KB text notes):\n")
    print("| codec | state payload | ratio | time | one 4 KB tool result |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(compression_rows(long_steps)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
