"""Transport pieces that need no Redis: circuit breaker, replay window, timeouts.

The Redis connection layer (``redis_io``) is tested against a real redis-server in
``tests/integration/test_redis_transport_connection.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from deepagent_temporal.streaming import (
    CircuitBreaker,
    RedisStreamBackend,
    _io_with_timeout,
)


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
    b = RedisStreamBackend(
        "redis://127.0.0.1:1", replay_max_events_per_run=5, replay_max_runs=2, replay_max_events=8
    )
    run = ("wf", "r1")
    for i in range(7):
        b._remember(run, b'{"index":%d}' % i)
    assert b.take_replay(*run, stale_only=True) == []  # nothing failed since
    b.circuit.record_failure()
    b._remember(run, b'{"index":7}')
    stale = b.take_replay(*run, stale_only=True)
    assert [e["index"] for e in stale] == [3, 4, 5, 6]  # last 5 per run, minus the new one
    assert [e["index"] for e in b.take_replay(*run, stale_only=False)] == [7]
    assert b._replay_total == 0
    # LRU over runs and the global budget
    for r in ("a", "b", "c"):
        for i in range(4):
            b._remember(("wf", r), b'{"i":%d}' % i)
    assert list(b._replay) == [("wf", "b"), ("wf", "c")]
    assert b._replay_total == 8
    b.forget_run("wf", "b")
    assert b._replay_total == 4


def test_replay_window_is_measured_from_the_newest_event():
    b = RedisStreamBackend("redis://127.0.0.1:1", replay_window_seconds=0.05)
    run = ("wf", "r")
    b._remember(run, b'{"i":0}')
    time.sleep(0.08)
    # an idle run keeps its tail however long it waits ...
    assert len(b.take_replay(*run, stale_only=False)) == 1
    b._remember(run, b'{"i":1}')
    time.sleep(0.08)
    b._remember(run, b'{"i":2}')  # ... but a new event pushes old ones out of the window
    assert [e["i"] for e in b.take_replay(*run, stale_only=False)] == [2]


async def test_io_timeout_fires_when_the_loop_is_idle():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await _io_with_timeout(asyncio.sleep(10), 0.1)
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
    assert await _io_with_timeout(reply_soon(), 0.1) == "ok"
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
