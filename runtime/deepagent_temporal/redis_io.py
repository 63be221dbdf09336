"""One redis-py connection for the token stream: pipelined commands, raw replies.

The stream writer keeps one pipeline in flight on a single connection and each subscriber
blocks in ``XREAD`` on its own; neither wants a pool, retries, response callbacks or
per-read timeouts. So this wraps one ``redis.asyncio`` connection from redis-py's
low-level API: redis-py speaks the protocol and handles the URL (AUTH, username, SELECT,
``rediss://`` TLS, TCP_NODELAY); replies come back as RESP2 values (bytes, ints, lists).
Timeouts are the caller's (``streaming._io_with_timeout``); after any error the caller
closes the connection and opens a new one.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Command = tuple[Any, ...]


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


__all__ = ["RedisConnection"]
