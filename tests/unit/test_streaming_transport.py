"""Transport pieces that need no Redis: circuit breaker, replay window, timeouts.

The Redis connection layer (``transport.redis_connection``) is tested against a real redis-server in
``tests/integration/test_redis_transport_connection.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from deepagent_temporal import RedisStreamBackend
from deepagent_temporal.transport.circuit import CircuitBreaker
from deepagent_temporal.transport.redis_connection import io_with_timeout
from deepagent_temporal.transport.replay import ReplayWindow


def test_circuit_breaker_states_and_backoff():
    now = [0.0]
    c = CircuitBreaker(cooldown=1.0, max_cooldown=3.0, clock=lambda: now[0])
    assert c.allow() and c.generation == 0
    c.record_failure()
    assert not c.allow() and c.state == "open" and c.generation == 1
    c.record_failure()  # already open: same generation
    assert c.generation == 1
    c.state = "half_open"  # a probe failed: cooldown doubles, capped
    c.record_failure()
    assert c.cooldown == 2.0 and c.generation == 1
    c.state = "half_open"
    c.record_failure()
    c.state = "half_open"
    c.record_failure()
    assert c.cooldown == 3.0
    c.record_success()
    assert c.allow() and c.cooldown == 1.0
    c.record_failure()
    assert c.generation == 2


def test_replay_window_bounds_and_generations():
    w = ReplayWindow(max_events_per_run=5, max_runs=2, max_events=8)
    run = ("wf", "r1")
    for i in range(7):
        w.remember(run, 0, b'{"index":%d}' % i)
    assert w.take(run, 0, stale_only=True) == []  # nothing failed since
    w.remember(run, 1, b'{"index":7}')  # written after the circuit opened once
    stale = w.take(run, 1, stale_only=True)
    assert [e["index"] for e in stale] == [3, 4, 5, 6]  # last 5 per run, minus the new one
    assert [e["index"] for e in w.take(run, 1, stale_only=False)] == [7]
    assert w.total == 0
    # LRU over runs and the global budget
    for r in ("a", "b", "c"):
        for i in range(4):
            w.remember(("wf", r), 1, b'{"i":%d}' % i)
    assert len(w) == 2 and w.take(("wf", "a"), 1, stale_only=False) == []
    assert w.total == 8
    w.forget(("wf", "b"))
    assert w.total == 4


def test_backend_replays_what_was_written_before_the_circuit_opened():
    b = RedisStreamBackend(
        "redis://127.0.0.1:1", replay_max_events_per_run=5, replay_max_runs=2, replay_max_events=8
    )
    run = ("wf", "r1")
    for i in range(3):
        b.replay.remember(run, b.circuit.generation, b'{"index":%d}' % i)
    assert b.take_replay(*run, stale_only=True) == []  # nothing failed since
    b.circuit.record_failure()
    assert [e["index"] for e in b.take_replay(*run, stale_only=True)] == [0, 1, 2]
    b.replay.remember(run, b.circuit.generation, b'{"index":3}')
    b.forget_run(*run)
    assert b.take_replay(*run, stale_only=False) == [] and b.replay.total == 0


def test_replay_window_is_measured_from_the_newest_event():
    w = ReplayWindow(window_seconds=0.05)
    run = ("wf", "r")
    w.remember(run, 0, b'{"i":0}')
    time.sleep(0.08)
    # an idle run keeps its tail however long it waits ...
    assert len(w.take(run, 0, stale_only=False)) == 1
    w.remember(run, 0, b'{"i":1}')
    time.sleep(0.08)
    w.remember(run, 0, b'{"i":2}')  # ... but a new event pushes old ones out of the window
    assert [e["i"] for e in w.take(run, 0, stale_only=False)] == [2]


async def test_io_timeout_fires_when_the_loop_is_idle():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await io_with_timeout(asyncio.sleep(10), 0.1)
    assert time.monotonic() - t0 < 0.5


async def test_io_timeout_tolerates_a_starved_loop():
    async def reply_soon() -> str:
        await asyncio.sleep(0.05)
        return "ok"

    async def hog() -> None:
        await asyncio.sleep(0.01)
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:  # CPU-bound work blocks the loop past the deadline
            pass

    hog_task = asyncio.create_task(hog())
    assert await io_with_timeout(reply_soon(), 0.1) == "ok"
    await hog_task


def test_from_env():
    assert RedisStreamBackend.from_env({}) is None
    b = RedisStreamBackend.from_env(
        {
            "REDIS_URL": "redis://:pw@h:1/2",
            "DEEPAGENT_STREAM_MAXLEN": "77",
            "DEEPAGENT_STREAM_TTL_SECONDS": "9",
        }
    )
    assert b is not None and b.maxlen == 77 and b.ttl_seconds == 9 and b.redis_url.endswith("/2")
