"""The stream's Redis connection layer (``redis_io``, on redis-py) against a real redis-server."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import uuid
import warnings

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from deepagent_temporal import RedisStreamBackend
from deepagent_temporal.transport.redis_connection import RedisConnection, io_with_timeout

pytestmark = pytest.mark.integration


async def client_names(url: str) -> list[str]:
    r = aioredis.from_url(url)
    try:
        return [c.get("name", "") for c in await r.client_list()]
    finally:
        await r.aclose()


async def wait_for_names(url: str, name: str, count: int, within: float = 2.0) -> int:
    deadline = time.monotonic() + within
    while True:
        n = (await client_names(url)).count(name)
        if n == count or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.02)


async def test_pipeline_returns_raw_replies_in_order(redis_up):
    key = f"t-{uuid.uuid4().hex}"
    conn = await RedisConnection.open(redis_up.url, client_name="t-raw")
    try:
        replies = await conn.pipeline(
            [
                (b"SET", key, 1),
                (b"INCR", key),
                (b"GET", key),
                (b"GET", key + "-missing"),
                (b"XADD", key + "-s", b"*", b"e", b"{}"),
                (b"XRANGE", key + "-s", b"-", b"+"),
                (b"LRANGE", key + "-empty", 0, -1),
                (b"CLIENT", b"GETNAME"),
            ]
        )
        assert replies[:4] == [b"OK", 2, b"2", None]
        entry_id = replies[4]
        assert replies[5] == [[entry_id, [b"e", b"{}"]]]
        assert replies[6:] == [[], b"t-raw"]
        assert await conn.command(b"DEL", key, key + "-s") == 2
    finally:
        await conn.close()
    assert not conn.connected


async def test_an_error_reply_is_raised_after_reading_every_reply(redis_up):
    key = f"t-{uuid.uuid4().hex}"
    conn = await RedisConnection.open(redis_up.url)
    try:
        with pytest.raises(ResponseError):
            await conn.pipeline([(b"SET", key, b"x"), (b"INCR", key), (b"GET", key)])
        # all three replies were read: the connection is still in step with the server
        assert conn.connected
        assert await conn.command(b"GET", key) == b"x"
        assert await conn.command(b"DEL", key) == 1
    finally:
        await conn.close()


async def test_database_and_client_name_from_the_url(redis_up):
    key = f"t-{uuid.uuid4().hex}"
    url = redis_up.url.rsplit("/", 1)[0] + "/5"
    conn = await RedisConnection.open(url, client_name="t-db5")
    try:
        await conn.command(b"SET", key, b"in-5")
    finally:
        await conn.close()
    r = aioredis.from_url(url)
    try:
        assert await r.get(key) == b"in-5"
        await r.delete(key)
    finally:
        await r.aclose()


async def test_a_dead_connection_is_reported_never_silently_replaced(redis_up):
    name = f"t-dead-{uuid.uuid4().hex[:6]}"
    conn = await RedisConnection.open(redis_up.url, client_name=name)
    # the server drops exactly this connection (as a restart or a proxy would)
    r = aioredis.from_url(redis_up.url)
    try:
        ids = [c["id"] for c in await r.client_list() if c.get("name") == name]
        assert len(ids) == 1
        await r.execute_command("CLIENT", "KILL", "ID", ids[0])
    finally:
        await r.aclose()
    with pytest.raises((RedisConnectionError, ConnectionError)):
        await io_with_timeout(conn.command(b"PING"), 2.0)
    assert not conn.connected
    with pytest.raises(RedisConnectionError):  # redis-py would reconnect; the caller decides
        await conn.send([(b"PING",)])
    assert not conn.connected
    await conn.close()
    assert name not in await client_names(redis_up.url)


async def test_a_timed_out_read_closes_the_connection(redis_up):
    name = f"t-slow-{uuid.uuid4().hex[:6]}"
    conn = await RedisConnection.open(redis_up.url, client_name=name)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await io_with_timeout(
            conn.command(b"XREAD", b"BLOCK", 5000, b"STREAMS", f"t-{uuid.uuid4().hex}", b"$"), 0.1
        )
    assert time.monotonic() - t0 < 1.0
    # the reply may still come: the connection is closed rather than left out of step
    assert not conn.connected
    await conn.close()
    assert await wait_for_names(redis_up.url, name, 0) == 0


async def test_backend_closes_its_connections(redis_up):
    writer = "deepagent-stream-writer"
    before = (await client_names(redis_up.url)).count(writer)
    b = RedisStreamBackend(redis_up.url)
    wf, run = f"wf-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await b.publish(wf, run, [{"type": "token", "token": "a", "index": 0}])
    assert (await client_names(redis_up.url)).count(writer) == before + 1
    assert [e["token"] for e in await b.read_all(wf, run)] == ["a"]
    await b.aclose()
    assert await wait_for_names(redis_up.url, writer, before) == before
    assert "deepagent-stream-reader" not in await client_names(redis_up.url)


def test_backend_left_open_is_cleaned_up_with_its_event_loop(redis_up, caplog):
    """A worker that ends its loop without ``aclose``: the writer task closes the
    connection when the loop cancels it; no pending-task or unclosed-socket warnings."""
    writer = "deepagent-stream-writer"
    before = asyncio.run(client_names(redis_up.url)).count(writer)

    async def main() -> None:
        b = RedisStreamBackend(redis_up.url)
        wf, run = f"wf-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        await b.publish(wf, run, [{"type": "token", "token": "a", "index": 0}])
        assert (await client_names(redis_up.url)).count(writer) == before + 1

    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, "asyncio"):
        warnings.simplefilter("always")
        t = threading.Thread(target=in_thread)
        t.start()
        t.join(30)
        gc.collect()
    assert not errors
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught
    assert "Task was destroyed" not in caplog.text
    assert asyncio.run(wait_for_names(redis_up.url, writer, before)) == before
