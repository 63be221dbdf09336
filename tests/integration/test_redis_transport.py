"""The Redis path against a real redis-server: publish/subscribe, bounds, failover.

The Temporal-path sink here is an in-memory queue standing in for the Temporal path (the
Temporal side is tested elsewhere); Redis itself is never mocked: failures are real
SIGKILLs of the redis-server process.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from deepagent_temporal import RedisStreamBackend, TokenCapturingHandler
from deepagent_temporal.client.delivery import TokenStreamMerger
from deepagent_temporal.dev.scripted import ScriptedChatModel, split_tokens

pytestmark = pytest.mark.integration

REPLIES = [
    "Redis streams carry tokens in real time while Temporal keeps the state durable.",
    "Second call: the summary goes to history, the tokens go to the stream.",
    "Third call ends the run.",
]


def ids() -> tuple[str, str]:
    return f"wf-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex


class TemporalPathQueue:
    """The Temporal-path sink (async callable) and the client's view of it (async iterator)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches: list[list[dict]] = []

    async def __call__(self, events: list[dict]) -> None:
        self.batches.append(events)
        for e in events:
            self.queue.put_nowait(e)

    def complete(self) -> None:
        self.queue.put_nowait({"type": "complete", "token": "", "source": "temporal"})

    async def iterate(self):
        while True:
            yield await self.queue.get()

    @property
    def events(self) -> list[dict]:
        return [e for b in self.batches for e in b]


def check_delivery(out: list[dict], replies: list[str]) -> None:
    """0 lost, 0 duplicated, per-call index 0..n-1, seq strictly increasing, text exact."""
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))
    calls: dict[tuple, list[dict]] = {}
    for e in out:
        if e["type"] == "token":
            calls.setdefault((e["task_id"], e["attempt"], e["llm_call"]), []).append(e)
    texts = []
    for key in sorted(calls, key=lambda k: k[2]):
        toks = calls[key]
        assert [e["index"] for e in toks] == list(range(len(toks))), key
        texts.append("".join(e["token"] for e in toks))
    assert texts == replies
    assert out[-1]["type"] == "complete"
    ends = [e for e in out if e["type"] == "llm_end"]
    assert len(ends) == len(replies)


async def run_activity(
    backend: RedisStreamBackend | None,
    wf: str,
    run: str,
    replies: list[str],
    temporal_path: TemporalPathQueue,
    *,
    task_id: str = "act-1",
    token_delay: float = 0.0,
    on_token=None,
    split: str | int = "words",
) -> tuple[list[str], list[dict]]:
    handler = TokenCapturingHandler(
        workflow_id=wf,
        run_id=run,
        node="model",
        task_id=task_id,
        redis=backend,
        temporal_publish=temporal_path,
    )
    model = ScriptedChatModel(
        script=replies, mode="sequential", token_delay=token_delay, on_token=on_token, split=split
    )
    contents = []
    for _ in range(len(replies)):
        msg = await model.ainvoke("go", config={"callbacks": [handler]})
        contents.append(msg.content)
    summaries = await handler.flush()
    return contents, summaries


async def finish_run(
    backend: RedisStreamBackend, wf: str, run: str, temporal_path: TemporalPathQueue
) -> bool:
    ok = await backend.publish_complete(wf, run, temporal_publish=temporal_path)
    if not ok:  # the Temporal side ends the stream when Redis cannot
        temporal_path.complete()
    return ok


async def client(
    backend: RedisStreamBackend,
    wf: str,
    run: str,
    temporal_path: TemporalPathQueue,
    slow: float = 0.0,
):
    async def redis_src():
        async for ev in backend.subscribe(wf, run, block_ms=200):
            if slow:
                await asyncio.sleep(slow)
            yield ev

    return [e async for e in TokenStreamMerger().amerge(redis_src(), temporal_path.iterate())]


@pytest.fixture
async def backend(redis_up):
    b = RedisStreamBackend(
        redis_up.url, op_timeout=0.5, cooldown_seconds=0.2, max_cooldown_seconds=1.0
    )
    yield b
    await b.aclose()


async def test_publish_subscribe_live(backend):
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    consumer = asyncio.create_task(client(backend, wf, run, temporal_path))
    contents, summaries = await run_activity(
        backend, wf, run, REPLIES, temporal_path, token_delay=0.001
    )
    assert await finish_run(backend, wf, run, temporal_path)
    out = await asyncio.wait_for(consumer, 10)
    assert contents == REPLIES
    check_delivery(out, REPLIES)
    assert {e["source"] for e in out} == {"redis"}
    assert temporal_path.events == []  # Redis path only: nothing through Temporal
    assert [s["transport"] for s in summaries] == ["redis"] * 3
    assert [s["token_count"] for s in summaries] == [len(split_tokens(r)) for r in REPLIES]


async def test_late_subscriber_gets_everything_from_the_start(backend):
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    await run_activity(backend, wf, run, REPLIES, temporal_path)
    assert await finish_run(backend, wf, run, temporal_path)
    out = await asyncio.wait_for(client(backend, wf, run, temporal_path), 10)
    check_delivery(out, REPLIES)
    # resume from a cursor: only what follows it
    first = [e async for e in backend.subscribe(wf, run)]
    cursor = first[10]["redis_id"]
    rest = [e async for e in backend.subscribe(wf, run, last_id=cursor)]
    assert [e["redis_id"] for e in rest] == [e["redis_id"] for e in first if e["redis_id"] > cursor]


async def test_maxlen_and_sliding_expire(redis_up):
    b = RedisStreamBackend(redis_up.url, maxlen=50, ttl_seconds=120)
    r = aioredis.from_url(redis_up.url)
    try:
        wf, run = ids()
        for i in range(600):
            await b.publish(wf, run, [{"type": "token", "token": "t", "index": i}])
        key = b.stream_key(wf, run)
        assert key == f"deepagent:stream:{wf}:{run}"
        length = await r.xlen(key)
        assert length < 600 and length >= 50  # MAXLEN ~ trims (approximately)
        ttl = await r.ttl(key)
        assert 100 < ttl <= 120
        await r.expire(key, 30)
        await asyncio.sleep(b.expire_refresh_seconds + 0.1)
        await b.publish(wf, run, [{"type": "token", "token": "t", "index": 600}])
        assert await r.ttl(key) > 100  # sliding: writes renew it (at most once a second)
    finally:
        await r.aclose()
        await b.aclose()


async def test_writes_are_pipelined_and_batched(backend):
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    text = "p" * 5000
    contents, summaries = await run_activity(backend, wf, run, [text], temporal_path, split="chars")
    assert summaries[0]["transport"] == "redis"
    # tokens queued while a pipeline is in flight ride the next one
    assert backend.events_written == 5002
    assert backend.writes < 2500
    r = aioredis.from_url(backend.redis_url)
    try:
        entries = await r.xlen(backend.stream_key(wf, run))
    finally:
        await r.aclose()
    assert entries < 5002
    events = await backend.read_all(wf, run)
    toks = [e for e in events if e["type"] == "token"]
    assert "".join(e["token"] for e in toks) == text
    assert [e["index"] for e in toks] == list(range(5000))


async def test_sync_threads_publish_through_redis(backend):
    wf, run = ids()
    handler = TokenCapturingHandler(workflow_id=wf, run_id=run, node="sync", redis=backend)
    model = ScriptedChatModel(script=["q" * 1000], split="chars")

    def sync_node():
        return model.invoke("go", config={"callbacks": [handler]}).content

    await asyncio.gather(*[asyncio.to_thread(sync_node) for _ in range(4)])
    summaries = await handler.flush()
    assert [s["transport"] for s in summaries] == ["redis"] * 4
    events = await backend.read_all(wf, run)
    for k in range(4):
        toks = [e for e in events if e["type"] == "token" and e["llm_call"] == k]
        assert [e["index"] for e in toks] == list(range(1000))


# kill points: global token number at which Redis is SIGKILLed (calls have 14/12/4 tokens)
KILL_POINTS = {
    "first-token": 0,
    "mid-first-call": 7,
    "last-token-of-first-call": 13,
    "mid-second-call": 20,
    "third-call": 27,
}


@pytest.mark.parametrize("slow_client", [0.0, 0.004], ids=["fast-client", "lagging-client"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_redis_killed_mid_stream(redis_server, redis_up, backend, point, slow_client):
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    kill_at = KILL_POINTS[point]
    emitted = [0]

    def on_token(tok: str, ts: float) -> None:
        if emitted[0] == kill_at:
            redis_server.kill()
        emitted[0] += 1

    consumer = asyncio.create_task(client(backend, wf, run, temporal_path, slow=slow_client))
    try:
        contents, summaries = await run_activity(
            backend, wf, run, REPLIES, temporal_path, token_delay=0.002, on_token=on_token
        )
        assert not redis_server.process.running
        assert contents == REPLIES
        assert not await finish_run(backend, wf, run, temporal_path)
        out = await asyncio.wait_for(consumer, 15)
    finally:
        consumer.cancel()
    check_delivery(out, REPLIES)
    assert "temporal" in {e["source"] for e in out}
    assert summaries[-1]["transport"] == "temporal"
    assert backend.circuit.state != "closed"

    # Redis comes back: new LLM calls go back to the Redis path
    redis_server.start()
    wf2, run2 = ids()
    temporal_path_b = TemporalPathQueue()
    deadline = time.monotonic() + 10
    while not backend.available() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert backend.circuit.state == "closed"
    consumer = asyncio.create_task(client(backend, wf2, run2, temporal_path_b))
    contents, summaries = await run_activity(backend, wf2, run2, REPLIES[:1], temporal_path_b)
    assert await finish_run(backend, wf2, run2, temporal_path_b)
    out = await asyncio.wait_for(consumer, 10)
    check_delivery(out, REPLIES[:1])
    assert summaries[0]["transport"] == "redis" and temporal_path_b.events == []


async def test_redis_killed_between_calls_and_between_activities(redis_server, redis_up, backend):
    """Redis dies while no call is active: what it held (unread by a lagging client) is
    replayed through the Temporal path when the next call notices."""
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    await run_activity(backend, wf, run, REPLIES[:1], temporal_path, task_id="act-1")
    redis_server.kill()
    contents, summaries = await run_activity(
        backend, wf, run, REPLIES[1:], temporal_path, task_id="act-2"
    )
    assert [s["transport"] for s in summaries] == ["temporal", "temporal"]
    assert not await finish_run(backend, wf, run, temporal_path)
    # the client connects only now: Redis lost everything, the Temporal path has it all
    out = await asyncio.wait_for(client(backend, wf, run, temporal_path), 15)
    calls = {}
    for e in out:
        if e["type"] == "token":
            calls.setdefault((e["task_id"], e["llm_call"]), []).append(e["token"])
    assert ["".join(v) for v in calls.values()] == REPLIES
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))


async def test_redis_down_before_the_run(redis_server, redis_up, backend):
    redis_server.kill()
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    consumer = asyncio.create_task(client(backend, wf, run, temporal_path))
    t0 = time.monotonic()
    contents, summaries = await run_activity(backend, wf, run, REPLIES, temporal_path)
    assert time.monotonic() - t0 < 5  # bounded timeouts, no hang
    assert [s["transport"] for s in summaries] == ["temporal"] * 3
    assert not await finish_run(backend, wf, run, temporal_path)
    out = await asyncio.wait_for(consumer, 15)
    check_delivery(out, REPLIES)
    assert len(temporal_path.batches) < 20


async def test_subscriber_survives_restart_and_resumes(redis_server, redis_up):
    pub = RedisStreamBackend(redis_up.url, cooldown_seconds=0.1)
    sub = RedisStreamBackend(redis_up.url)
    wf, run = ids()
    got: list[dict] = []

    async def consume():
        async for ev in sub.subscribe(wf, run, block_ms=200):
            got.append(ev)

    task = asyncio.create_task(consume())
    try:
        await pub.publish(wf, run, [{"type": "token", "token": "a", "index": 0}])
        await asyncio.sleep(0.3)
        redis_server.kill()
        await asyncio.sleep(0.5)  # subscriber is retrying with backoff
        assert not task.done()
        redis_server.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                await pub.publish(wf, run, [{"type": "token", "token": "b", "index": 1}])
                break
            except ConnectionError:
                await asyncio.sleep(0.1)
        await pub.publish_complete(wf, run)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await pub.aclose()
    assert [e.get("token") for e in got] == ["a", "b", ""]
    assert got[-1]["type"] == "complete"


async def test_subscribe_many_over_one_connection(backend):
    runs = [ids() for _ in range(5)]
    for k, (wf, run) in enumerate(runs):
        await backend.publish(wf, run, [{"type": "token", "token": str(k), "index": 0}])
    got: dict[tuple, list[str]] = {}

    async def consume():
        async for run, ev in backend.subscribe_many(runs, block_ms=200):
            got.setdefault(run, []).append(ev["type"])

    task = asyncio.create_task(consume())
    for wf, run in runs:
        await backend.publish_complete(wf, run)
    await asyncio.wait_for(task, 10)
    assert got == {run: ["token", "complete"] for run in runs}


async def test_subscriber_is_cancellable(redis_up):
    b = RedisStreamBackend(redis_up.url)
    wf, run = ids()

    async def consume():
        async for _ in b.subscribe(wf, run, block_ms=5000):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 1.0


async def test_retry_attempt_reset_travels_through_redis(backend):
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    model = ScriptedChatModel(script=["one two three four five"], fail_after_tokens=2)
    h1 = TokenCapturingHandler(
        workflow_id=wf, run_id=run, node="m", task_id="a", redis=backend, attempt=1
    )
    with pytest.raises(RuntimeError):
        await model.ainvoke("q", config={"callbacks": [h1]})
    await h1.flush()
    h2 = TokenCapturingHandler(
        workflow_id=wf, run_id=run, node="m", task_id="a", redis=backend, attempt=2
    )
    final = await model.ainvoke("q", config={"callbacks": [h2]})
    await h2.flush()
    await finish_run(backend, wf, run, temporal_path)
    out = await asyncio.wait_for(client(backend, wf, run, temporal_path), 10)
    types = [e["type"] for e in out]
    assert "reset" in types
    after = out[types.index("reset") + 1 :]
    assert "".join(e["token"] for e in after if e["type"] == "token") == final.content
    before = out[: types.index("reset")]
    assert "".join(e["token"] for e in before if e["type"] == "token") == "one two"


async def test_redis_restarted_mid_call_then_back_to_redis(redis_server, redis_up, backend):
    """Kill + immediate restart (empty Redis): the call fails over, later calls use Redis."""
    wf, run = ids()
    temporal_path = TemporalPathQueue()
    emitted = [0]

    def on_token(tok: str, ts: float) -> None:
        if emitted[0] == 5:
            redis_server.kill()
            redis_server.start()
        emitted[0] += 1

    handler = TokenCapturingHandler(
        workflow_id=wf,
        run_id=run,
        node="model",
        task_id="a",
        redis=backend,
        temporal_publish=temporal_path,
    )
    model = ScriptedChatModel(
        script=REPLIES, mode="sequential", token_delay=0.002, on_token=on_token
    )
    consumer = asyncio.create_task(client(backend, wf, run, temporal_path))
    try:
        for _ in REPLIES:
            await model.ainvoke("go", config={"callbacks": [handler]})
            deadline = time.monotonic() + 10
            while not backend.available() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        summaries = await handler.flush()
        assert await finish_run(backend, wf, run, temporal_path)
        out = await asyncio.wait_for(consumer, 15)
    finally:
        consumer.cancel()
    check_delivery(out, REPLIES)
    assert [s["transport"] for s in summaries] == ["temporal", "redis", "redis"]
    assert summaries[0].get("failover") is True


def _signal_redis(server, sig) -> None:
    import os

    os.kill(server.process._proc.pid, sig)


async def test_redis_frozen_then_thawed_ambiguous_writes(redis_server, redis_up, backend):
    """SIGSTOP: writes time out (they may still land when Redis resumes): the client gets
    some tokens twice (Redis and the Temporal path) and the merger delivers each exactly once."""
    import signal

    wf, run = ids()
    temporal_path = TemporalPathQueue()
    emitted = [0]
    frozen = [False]

    def on_token(tok: str, ts: float) -> None:
        if emitted[0] == 4:
            _signal_redis(redis_server, signal.SIGSTOP)
            frozen[0] = True
        emitted[0] += 1

    consumer = asyncio.create_task(client(backend, wf, run, temporal_path, slow=0.001))
    try:
        t0 = time.monotonic()
        contents, summaries = await run_activity(
            backend, wf, run, REPLIES, temporal_path, token_delay=0.002, on_token=on_token
        )
        assert time.monotonic() - t0 < 10  # bounded: the activity never hangs on Redis
        assert summaries[0]["transport"] == "temporal"
    finally:
        if frozen[0]:
            _signal_redis(redis_server, signal.SIGCONT)
    try:
        # Redis is back with its data: the subscriber resumes; the run ends through Redis
        deadline = time.monotonic() + 10
        while not backend.available() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert await finish_run(backend, wf, run, temporal_path)
        out = await asyncio.wait_for(consumer, 15)
    finally:
        consumer.cancel()
    check_delivery(out, REPLIES)


async def test_concurrent_runs_killed_together_sync_and_async(redis_server, redis_up, backend):
    """Six runs share one backend (one writer, one connection); half call the model from
    executor threads (sync nodes). Redis dies mid-stream: every run's client still gets
    exactly its own tokens, once."""
    runs = [ids() for _ in range(6)]
    temporal_paths = [TemporalPathQueue() for _ in runs]
    replies = [[f"run {k} says: " + " ".join(f"w{k}.{i}" for i in range(30))] for k in range(6)]
    emitted = [0]

    def on_token(tok: str, ts: float) -> None:
        emitted[0] += 1
        if emitted[0] == 60:
            redis_server.kill()

    consumers = [
        asyncio.create_task(client(backend, wf, run, p1))
        for (wf, run), p1 in zip(runs, temporal_paths, strict=True)
    ]

    async def one(k: int) -> list[dict]:
        wf, run = runs[k]
        h = TokenCapturingHandler(
            workflow_id=wf,
            run_id=run,
            node="model",
            task_id=f"t{k}",
            redis=backend,
            temporal_publish=temporal_paths[k],
        )
        model = ScriptedChatModel(script=replies[k], token_delay=0.001, on_token=on_token)
        if k % 2:
            await asyncio.to_thread(lambda: model.invoke("go", config={"callbacks": [h]}))
        else:
            await model.ainvoke("go", config={"callbacks": [h]})
        return await h.flush()

    try:
        summaries = await asyncio.gather(*[one(k) for k in range(6)])
        assert not redis_server.process.running
        for (wf, run), p1 in zip(runs, temporal_paths, strict=True):
            assert not await finish_run(backend, wf, run, p1)
        outs = await asyncio.wait_for(asyncio.gather(*consumers), 20)
    finally:
        for c in consumers:
            c.cancel()
    for k, out in enumerate(outs):
        check_delivery(out, replies[k])
        assert {e["task_id"] for e in out if e["type"] == "token"} == {f"t{k}"}
    assert any(s[0]["transport"] == "temporal" for s in summaries)


async def test_password_and_database_from_the_url(tmp_path):
    """Managed Redis has a password (the operator's Secret); the URL may pick a database."""
    from deepagent_temporal.dev.servers import RedisServer

    server = RedisServer(log_dir=tmp_path, password="s3cr/t")
    server.start()
    try:
        url = server.url.replace("s3cr/t", "s3cr%2Ft").rsplit("/", 1)[0] + "/3"
        b = RedisStreamBackend(url)
        wf, run = ids()
        await b.publish(wf, run, [{"type": "token", "token": "hi", "index": 0}])
        await b.publish_complete(wf, run)
        got = [e async for e in b.subscribe(wf, run)]
        assert [e["type"] for e in got] == ["token", "complete"]
        r = aioredis.from_url(url)
        try:
            assert await r.exists(b.stream_key(wf, run)) == 1  # in database 3
        finally:
            await r.aclose()
        await b.aclose()

        bad = RedisStreamBackend(url.replace("s3cr%2Ft", "wrong"))
        assert not await bad.ping()
        with pytest.raises(ConnectionError):
            await bad.publish(wf, run, [{"type": "token", "token": "x", "index": 1}])
        assert bad.status()["redis"] != "up"
        await bad.aclose()
    finally:
        server.stop()
