"""Reading a run's token stream from Redis (``XREAD BLOCK``), across Redis restarts."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from deepagent_temporal.contract import REDIS, decode_entry
from deepagent_temporal.transport.redis_connection import (
    RedisConnection,
    RedisEndpoint,
    io_with_timeout,
)

logger = logging.getLogger(__name__)

Run = tuple[str, str]  # (workflow id, run id)


class RedisStreamReader(RedisEndpoint):
    """Subscriber side of the Redis path. Each subscription uses its own connection."""

    async def subscribe(
        self,
        workflow_id: str,
        run_id: str,
        last_id: str = "0-0",
        *,
        block_ms: int = 1000,
        count: int = 1000,
        max_backoff: float = 2.0,
        stop_on_complete: bool = True,
        on_idle: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield events of a run from ``last_id`` on, until ``complete``.

        Survives Redis restarts (reconnects with backoff and resumes after the last id
        seen); cancel the consuming task (or ``aclose()``) to stop. Each event carries
        ``redis_id`` (its entry id, the resume cursor) and ``source="redis"``.
        ``on_idle`` is called whenever the reader has caught up with the stream.
        """
        async for _run, ev in self.subscribe_many(
            [(workflow_id, run_id)],
            {(workflow_id, run_id): last_id},
            block_ms=block_ms,
            count=count,
            max_backoff=max_backoff,
            stop_on_complete=stop_on_complete,
            on_idle=on_idle,
        ):
            yield ev

    async def subscribe_many(
        self,
        runs: Sequence[Run],
        last_ids: dict[Run, str] | None = None,
        *,
        block_ms: int = 1000,
        count: int = 1000,
        max_backoff: float = 2.0,
        stop_on_complete: bool = True,
        on_idle: Callable[[], None] | None = None,
    ) -> AsyncIterator[tuple[Run, dict[str, Any]]]:
        """Like ``subscribe`` for many runs over one connection: yields ``(run, event)``.

        A run stops being read after its ``complete``; the iterator ends when all have.
        """
        cursors: dict[bytes, str] = {}
        run_of: dict[bytes, Run] = {}
        for run in runs:
            key = self.stream_key(*run).encode()
            run_of[key] = (run[0], run[1])
            cursors[key] = (last_ids or {}).get(run, "0-0")
        conn: RedisConnection | None = None
        backoff = 0.05
        try:
            while cursors:
                try:
                    if conn is None or not conn.connected:
                        conn = await self._connect("deepagent-stream-subscriber")
                    keys = list(cursors)
                    async with asyncio.timeout(block_ms / 1000 + max(self.op_timeout, 1.0)):
                        resp = await conn.command(
                            b"XREAD",
                            b"COUNT",
                            count,
                            b"BLOCK",
                            block_ms,
                            b"STREAMS",
                            *keys,
                            *(cursors[k] for k in keys),
                        )
                    backoff = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reconnect on any I/O problem
                    logger.debug("subscriber reconnecting after %r", exc)
                    if conn is not None:
                        await conn.close()
                        conn = None
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, max_backoff)
                    continue
                if not resp:
                    if on_idle is not None:
                        on_idle()  # caught up: nothing more was written in block_ms
                    continue
                if isinstance(resp, dict):  # RESP3 (a ?protocol=3 URL) replies with a map
                    resp = resp.items()
                for key, entries in resp:
                    run = run_of[key]
                    for entry_id, fields in entries:
                        eid = entry_id.decode()
                        cursors[key] = eid
                        for ev in decode_entry(fields):
                            ev["source"] = REDIS
                            ev["redis_id"] = eid
                            yield run, ev
                            if stop_on_complete and ev.get("type") == "complete":
                                cursors.pop(key, None)
                                break
                        if key not in cursors:
                            break
        finally:
            if conn is not None:
                await conn.close()

    async def read_all(self, workflow_id: str, run_id: str) -> list[dict[str, Any]]:
        """All events currently in a run's stream (XRANGE), for tests and tools."""
        conn = await self._connect("deepagent-stream-reader")
        try:
            entries = await io_with_timeout(
                conn.command(b"XRANGE", self.stream_key(workflow_id, run_id), b"-", b"+"),
                max(self.op_timeout, 5.0),
            )
        finally:
            await conn.close()
        out = []
        for entry_id, fields in entries or []:
            for ev in decode_entry(fields):
                ev["redis_id"] = entry_id.decode()
                out.append(ev)
        return out


__all__ = ["RedisStreamReader"]
