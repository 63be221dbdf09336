"""A minimal asyncio Redis (RESP2) connection for the token streaming hot path.

Why not redis-py here: its asyncio client adds ~100+ us per round trip (pool locks,
per-read timeouts, response callbacks); the token path needs a few tens. This module does
only what the stream writer and subscriber need: connect (AUTH / SELECT / TLS from a
``redis://`` or ``rediss://`` URL), send pipelined commands, parse replies. Timeouts are
applied by the caller; any error means "close this connection and make a new one".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from typing import Any
from urllib.parse import unquote, urlparse


class RespError(Exception):
    """An error reply from Redis (``-ERR ...``)."""


def _encode_arg(a: Any) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, int | float):
        return str(a).encode()
    return str(a).encode()


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    parts: list[bytes] = []
    for cmd in commands:
        parts.append(b"*%d\r\n" % len(cmd))
        for a in cmd:
            b = _encode_arg(a)
            parts.append(b"$%d\r\n" % len(b))
            parts.append(b)
            parts.append(b"\r\n")
    return b"".join(parts)


class RespConnection:
    """One connection; not safe for concurrent commands (one user at a time)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    @classmethod
    async def connect(cls, url: str, *, client_name: str | None = None) -> RespConnection:
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme: {u.scheme!r}")
        host = u.hostname or "localhost"
        port = u.port or 6379
        ssl_ctx = _ssl.create_default_context() if u.scheme == "rediss" else None
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_ctx, limit=2**22)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(reader, writer)
        try:
            setup: list[tuple[Any, ...]] = []
            password = unquote(u.password) if u.password else None
            username = unquote(u.username) if u.username else None
            if password is not None:
                setup.append(("AUTH", username, password) if username else ("AUTH", password))
            db = (u.path or "/").lstrip("/")
            if db and db != "0":
                setup.append(("SELECT", int(db)))
            if client_name:
                setup.append(("CLIENT", "SETNAME", client_name))
            if setup:
                await conn.pipeline(setup)
        except BaseException:
            conn.close()
            raise
        return conn

    def send(self, commands: list[tuple[Any, ...]]) -> None:
        """Write commands (one pipelined write, non-blocking); read with ``read_replies``."""
        self.writer.write(pack_commands(commands))

    async def read_replies(self, n: int) -> list[Any]:
        """Read n replies; raise the first error reply after reading them all."""
        replies = [await self.read_reply() for _ in range(n)]
        for r in replies:
            if isinstance(r, RespError):
                raise r
        return replies

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send all commands in one write; return their replies (raise the first error)."""
        self.send(commands)
        return await self.read_replies(len(commands))

    async def command(self, *args: Any) -> Any:
        return (await self.pipeline([args]))[0]

    async def read_reply(self) -> Any:
        line = await self.reader.readuntil(b"\r\n")
        t = line[:1]
        rest = line[1:-2]
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = await self.reader.readexactly(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [await self.read_reply() for _ in range(n)]
        if t == b":":
            return int(rest)
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b"":
            raise ConnectionError("Redis closed the connection")
        raise ConnectionError(f"unexpected RESP reply: {line[:40]!r}")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()


__all__ = ["RespConnection", "RespError", "pack_commands"]
