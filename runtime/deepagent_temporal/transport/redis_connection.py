"""One redis-py connection for the token stream: pipelined commands, raw replies.

The stream writer keeps one pipeline in flight on a single connection and each subscriber
blocks in ``XREAD`` on its own; neither wants a pool, retries, response callbacks or
per-read timeouts. So this wraps one ``redis.asyncio`` connection from redis-py's
low-level API: redis-py speaks the protocol and handles the URL (AUTH, username, SELECT,
``rediss://`` TLS, TCP_NODELAY); replies come back as RESP2 values (bytes, ints, lists).
Timeouts are the caller's (:func:`io_with_timeout`); after any error the caller closes
the connection and opens a new one. :class:`RedisEndpoint` is what the writer and the
reader share: the URL, the stream key names and the bounded connect / PING.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from deepagent_temporal.contract import STREAM_KEY_PREFIX, stream_key

Command = tuple[Any, ...]
T = TypeVar("T")


class RedisConnection:
    """One connection; not safe for concurrent commands (one user at a time)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AbstractConnection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, url: str, *, client_name: str | None = None) -> RedisConnection:
        """Connect (and authenticate / select the database) from a ``redis://`` URL."""
        conn = ConnectionPool.from_url(
            url,
            client_name=client_name,
            protocol=2,  # raw replies in one shape (RESP3 would turn XREAD into a map)
            socket_timeout=None,  # the caller bounds every operation
        ).make_connection()
        try:
            await conn.connect()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return cls(conn)

    @property
    def connected(self) -> bool:
        return self._conn.is_connected

    async def send(self, commands: list[Command]) -> None:
        """Write commands in one pipelined write; read their replies with ``read_replies``."""
        if not self._conn.is_connected:  # redis-py would reconnect silently: the caller decides
            raise RedisConnectionError("Redis connection is closed")
        await self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)

    async def read_replies(self, n: int) -> list[Any]:
        """Read n replies; raise the first error reply after reading them all."""
        replies: list[Any] = []
        error: ResponseError | None = None
        for _ in range(n):
            try:
                # raw bytes even if the URL asks for decode_responses
                replies.append(await self._conn.read_response(disable_decoding=True))
            except ResponseError as exc:
                error = error or exc
                replies.append(exc)
        if error is not None:
            raise error
        return replies

    async def pipeline(self, commands: list[Command]) -> list[Any]:
        """Send all commands in one write; return their replies (raise the first error)."""
        await self.send(commands)
        return await self.read_replies(len(commands))

    async def command(self, *args: Any) -> Any:
        return (await self.pipeline([args]))[0]

    async def close(self) -> None:
        """Close the socket now (never waits for the server)."""
        await self._conn.disconnect(nowait=True)


async def io_with_timeout(aw: Awaitable[T], seconds: float) -> T:
    """Like ``asyncio.timeout``, but a starved event loop does not count as a slow Redis.

    When CPU-bound work (a sync node on the loop, fifty LLM calls starting at once) hogs
    the loop, the timer fires long after its deadline, usually with the reply already
    waiting in the socket. A bounded timeout should measure Redis, so a late timer is
    re-armed (up to 5x ``seconds`` in total) instead of cancelling. No extra task.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    start = loop.time()
    state: list[Any] = [False, None]  # [timed out, timer handle]

    def fire(due: float) -> None:
        now = loop.time()
        if now - due > 0.05 and now < start + 5 * seconds:
            nxt = now + min(seconds, 0.25)
            state[1] = loop.call_at(nxt, fire, nxt)
            return
        state[0] = True
        task.cancel()

    state[1] = loop.call_at(start + seconds, fire, start + seconds)
    try:
        return await aw
    except asyncio.CancelledError:
        if state[0] and task.uncancel() == 0:
            raise TimeoutError(f"Redis did not answer within {seconds}s") from None
        raise
    finally:
        state[1].cancel()


class RedisEndpoint:
    """Where a run's token stream lives: URL, key names, bounded connect and PING."""

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379/0",
        *,
        key_prefix: str = STREAM_KEY_PREFIX,
        op_timeout: float = 0.5,
        connect_timeout: float = 0.5,
    ) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.op_timeout = op_timeout
        self.connect_timeout = connect_timeout

    def stream_key(self, workflow_id: str, run_id: str) -> str:
        return stream_key(workflow_id, run_id, self.key_prefix)

    async def _connect(self, client_name: str) -> RedisConnection:
        return await io_with_timeout(
            RedisConnection.open(self.redis_url, client_name=client_name), self.connect_timeout
        )

    async def ping(self) -> bool:
        """One PING on a fresh connection, within the bounded timeouts."""
        try:
            conn = await self._connect("deepagent-stream-ping")
        except Exception:  # noqa: BLE001
            return False
        try:
            await io_with_timeout(conn.command(b"PING"), self.op_timeout)
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            await conn.close()


__all__ = ["RedisConnection", "RedisEndpoint", "io_with_timeout"]
