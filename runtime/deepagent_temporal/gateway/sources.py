"""Reading a run's two paths at once without ever waiting for a source to close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from deepagent_temporal.client.delivery import SOURCE_DONE

#: cleanups of closed streams still waiting for an in-flight Temporal long poll
_CLEANUPS: set[asyncio.Task] = set()


@contextlib.asynccontextmanager
async def fan_in(sources: dict[str, AsyncIterator[Any]]) -> AsyncIterator[asyncio.Queue]:
    """Like :func:`deepagent_temporal.client.delivery.fan_in`, but leaving does not wait
    for the sources to close: a Temporal long-poll update cannot be cancelled before the
    server answers it (on a paused run, not before something is published), and a
    finished or abandoned stream must not wait for that. The pumps are cancelled and
    reaped in the background."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(name: str, src: AsyncIterator[Any]) -> None:
        try:
            async for item in src:
                queue.put_nowait((name, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - forwarded to the consumer
            queue.put_nowait((name, exc))
        finally:
            queue.put_nowait((name, SOURCE_DONE))

    tasks = [asyncio.ensure_future(pump(name, src)) for name, src in sources.items()]
    try:
        yield queue
    finally:
        for task in tasks:
            task.cancel()

        async def reap() -> None:
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for src in sources.values():
                with contextlib.suppress(BaseException):
                    await src.aclose()  # type: ignore[attr-defined]

        cleanup = asyncio.ensure_future(reap())
        _CLEANUPS.add(cleanup)
        cleanup.add_done_callback(_CLEANUPS.discard)


async def quiet(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The Redis path is best effort: the durable path decides how the segment ends."""
    with contextlib.suppress(Exception):
        async for ev in events:
            yield ev
