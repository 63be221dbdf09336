"""``deepagent-temporal demo``: the embedded default, end to end on one machine.

Starts a local Temporal dev server, a local redis-server and a worker process for the
example Deep Agent, streams one answer live to the terminal, prints a summary (time to
first token, tokens/s, which transport carried the tokens) and stops everything it
started. ``--failover`` kills Redis mid-answer to show the stream continuing through
Temporal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from deepagent_temporal.dev.servers import RedisServer, TemporalDevServer
from deepagent_temporal.dev.workerproc import WorkerProcess

EXAMPLE_GRAPH = "deepagent_temporal.examples.research_agent:agent"
DEFAULT_QUESTION = "What does Temporal add to a LangGraph agent?"


async def _stream_one_answer(
    temporal: TemporalDevServer,
    redis: RedisServer,
    task_queue: str,
    question: str,
    kill_redis_after: int | None,
) -> dict:
    from temporalio.client import Client

    from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent
    from deepagent_temporal.engine.worker import load_graph

    client = await Client.connect(temporal.address)
    agent = TemporalDeepAgent(
        load_graph(EXAMPLE_GRAPH),
        client,
        task_queue=task_queue,
        enable_token_streaming=True,
        redis_stream_backend=RedisStreamBackend(redis_url=redis.url),
    )
    started = time.perf_counter()
    first_token_at: float | None = None
    sources: Counter[str] = Counter()
    tokens = 0
    last_source = None
    inp = {"messages": [{"role": "user", "content": question}]}
    config = {"configurable": {"thread_id": f"demo-{uuid.uuid4().hex[:8]}"}}
    llm_calls = 0
    async for event in agent.astream(inp, config, stream_mode="tokens"):
        if event.get("type") == "llm_start":
            llm_calls += 1
            if llm_calls > 1:
                print("\n", flush=True)  # a new model call (e.g. after a tool call)
            continue
        if event.get("type") == "reset":
            print("\n[attempt failed: its partial tokens are dropped; the retry follows]")
            continue
        if event.get("type") != "token":
            continue
        if first_token_at is None:
            first_token_at = time.perf_counter()
        source = event.get("source", "?")
        if last_source is not None and source != last_source:
            print(f"\n[transport switched: {last_source} -> {source}]", flush=True)
        last_source = source
        sources[source] += 1
        tokens += 1
        print(event.get("token", ""), end="", flush=True)
        if kill_redis_after is not None and tokens == kill_redis_after:
            redis.kill()
            print("\n[redis killed mid-answer]", flush=True)
    ended = time.perf_counter()
    print()
    streaming_time = ended - (first_token_at or ended)
    return {
        "ttft_ms": ((first_token_at or ended) - started) * 1000,
        "tokens": tokens,
        "tokens_per_s": tokens / streaming_time if streaming_time > 0 else float(tokens),
        "sources": dict(sources),
    }


def _model_banner() -> str:
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "model: Anthropic (ANTHROPIC_API_KEY is set)"
    if os.environ.get("OPENAI_API_KEY"):
        return "model: OpenAI (OPENAI_API_KEY is set)"
    return "model: offline scripted model (deterministic; set ANTHROPIC_API_KEY or OPENAI_API_KEY for a real one)"


def _interrupt(signum, frame) -> None:
    """SIGTERM (e.g. a CI timeout) unwinds the started services like Ctrl-C does."""
    raise KeyboardInterrupt


def run_demo(question: str = DEFAULT_QUESTION, failover: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    log_dir = Path(tempfile.mkdtemp(prefix="deepagent-demo-"))
    task_queue = f"demo-{uuid.uuid4().hex[:8]}"
    print(_model_banner())
    print(f"logs: {log_dir}")
    with ExitStack() as stack:
        signal.signal(signal.SIGTERM, _interrupt)
        temporal = TemporalDevServer(log_dir)
        print("starting Temporal dev server ...", flush=True)
        temporal.start()
        stack.callback(temporal.stop)
        redis = RedisServer(log_dir)
        print("starting redis-server ...", flush=True)
        redis.start()
        stack.callback(redis.stop)
        print("starting worker ...", flush=True)
        worker = WorkerProcess(
            EXAMPLE_GRAPH, temporal.address, task_queue, redis_url=redis.url, log_dir=log_dir
        )
        stack.callback(worker.stop)
        worker.start()
        print(f"\n> {question}\n", flush=True)
        try:
            summary = asyncio.run(
                _stream_one_answer(
                    temporal, redis, task_queue, question, kill_redis_after=20 if failover else None
                )
            )
        except Exception as exc:  # the run failed: say why, keep the logs
            print(f"\nrun failed: {exc}\nworker log tail:\n{worker.log_tail()}", file=sys.stderr)
            return 1
    carried = ", ".join(f"{name}: {count}" for name, count in sorted(summary["sources"].items()))
    print("\n--- summary ---")
    print(f"time to first token: {summary['ttft_ms']:.0f} ms")
    print(f"tokens: {summary['tokens']}  ({summary['tokens_per_s']:.0f} tokens/s)")
    print(f"transport: {carried}")
    return 0 if summary["tokens"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(run_demo(failover="--failover" in sys.argv))
