"""Fault matrix: Redis SIGKILLed, restarted empty or SIGSTOPped at seeded random points
while two worker processes serve a run with a Send fan-out, a node with two model calls,
an interrupt and a resume. Every run's client must get every token exactly once (as
tokens, or as a snapshot of what Redis lost), and the texts must equal the final messages.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict

import pytest
from langchain_core.messages import AIMessage
from langgraph.types import Command

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent

pytestmark = pytest.mark.integration

GRAPH = "deepagent_temporal.examples.shapes:fault_matrix"
FAULTS = ("sigkill", "restart_empty", "sigstop")
RUNS_PER_FAULT = 7
SEED = 20261130


@pytest.fixture(scope="module")
def workers(start_worker):
    first = start_worker(GRAPH, "matrix", redis=True)
    second = start_worker(GRAPH, "matrix", redis=True, task_queue=first.task_queue)
    return first, second


async def _redis_up_everywhere(redis_server, workers, wait_s=20.0):
    if not redis_server.process.running:
        redis_server.start()
    deadline = asyncio.get_running_loop().time() + wait_s
    while asyncio.get_running_loop().time() < deadline:
        bodies = [(await asyncio.to_thread(w.readyz))[1] for w in workers]
        if all(b.get("redis") == "up" for b in bodies):
            return
        await asyncio.sleep(0.2)


async def _inject(fault: str, redis_server, delay: float, outage: float) -> None:
    await asyncio.sleep(delay)
    if fault == "sigkill":  # down for a while, then back (empty)
        redis_server.kill()
        await asyncio.sleep(outage)
        redis_server.start()
    elif fault == "restart_empty":  # gone and back at once: acknowledged entries are lost
        redis_server.kill()
        redis_server.start()
    else:  # frozen: writes time out, the circuit opens, then it answers again
        redis_server.freeze()
        await asyncio.sleep(outage)
        redis_server.thaw()


def _deliveries(events: list[dict]) -> tuple[dict[str, str], list[tuple]]:
    """Text per message from its last attempt's deltas; (message, index) seen twice."""
    dropped = {(e.get("task_id"), e["attempt"]) for e in events if e["type"] == "reset"}
    texts: dict[str, str] = defaultdict(str)
    seen: Counter = Counter()
    for e in events:
        if e["type"] not in ("token", "snapshot"):
            continue
        if any(e.get("task_id") == t and e["attempt"] <= a for t, a in dropped):
            continue
        seen[(e["message_id"], e["attempt"], e["index"])] += 1
        texts[e["message_id"]] += e["token"]
    return dict(texts), [k for k, n in seen.items() if n > 1]


async def _one_run(agent, fault, redis_server, rng) -> dict:
    config = {"configurable": {"thread_id": f"m-{uuid.uuid4().hex}"}}
    fault_task = asyncio.create_task(
        _inject(fault, redis_server, rng.uniform(0.05, 0.5), rng.uniform(0.6, 1.5))
    )
    first = [
        ev
        async for ev in agent.astream(
            {"topics": ["alpha", "beta", "gamma"]}, config, stream_mode="tokens", timeout=120
        )
    ]
    await fault_task
    rest = [
        ev
        async for ev in agent.astream(
            Command(resume="ship it"), config, stream_mode="tokens", timeout=120
        )
    ]
    state = await agent.get_state(config)
    finals = {m.id: m.content for m in state.values["messages"] if isinstance(m, AIMessage)}
    texts, duplicated = _deliveries(first + rest)
    events = first + rest
    return {
        "complete": texts == finals and len(finals) == 6,
        "duplicates": len(duplicated),
        "snapshots": sum(e["type"] == "snapshot" for e in events),
        "temporal": sum(e["type"] == "token" and e["source"] == "temporal" for e in events),
        "resets": sum(e["type"] == "reset" for e in events),
        "status": state.metadata["status"],
        "missing": {k: (v, texts.get(k)) for k, v in finals.items() if texts.get(k) != v},
    }


async def test_every_token_exactly_once_under_redis_faults(temporal_client, redis_server, workers):
    rng = random.Random(SEED)
    agent = TemporalDeepAgent(
        None,
        temporal_client,
        task_queue=workers[0].task_queue,
        graph_name=GRAPH,
        redis_stream_backend=RedisStreamBackend(redis_server.url),
    )
    results: dict[str, list[dict]] = defaultdict(list)
    for i in range(RUNS_PER_FAULT * len(FAULTS)):
        fault = FAULTS[i % len(FAULTS)]
        await _redis_up_everywhere(redis_server, workers)
        results[fault].append(await _one_run(agent, fault, redis_server, rng))
    await _redis_up_everywhere(redis_server, workers)

    print(f"\nfault matrix (seed {SEED}), two workers, Redis faults at random points:")
    print(
        "| fault | runs | every token once | texts == final | via Temporal | snapshots | resets |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for fault in FAULTS:
        rows = results[fault]
        print(
            f"| {fault} | {len(rows)} | {sum(r['duplicates'] == 0 for r in rows)} "
            f"| {sum(r['complete'] for r in rows)} | {sum(r['temporal'] for r in rows)} "
            f"| {sum(r['snapshots'] for r in rows)} | {sum(r['resets'] for r in rows)} |"
        )
    failures = [
        (fault, n, r)
        for fault, rows in results.items()
        for n, r in enumerate(rows)
        if r["duplicates"] or not r["complete"] or r["status"] != "completed"
    ]
    assert not failures, failures
