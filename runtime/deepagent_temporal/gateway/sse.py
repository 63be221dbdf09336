"""Server-sent events as the LangGraph Agent Server frames them, and JSON for its bodies.

Framing, byte for byte as ``langgraph_api.sse.json_to_sse``: ``event: <name>\\r\\n``,
``data: <json>\\r\\n``, ``id: <id>\\r\\n`` (when there is one), ``\\r\\n``; a heartbeat
is the comment ``: heartbeat\\r\\n\\r\\n`` every 5 seconds of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import orjson

logger = logging.getLogger(__name__)

HEARTBEAT = b": heartbeat\r\n\r\n"
HEARTBEAT_SECONDS = 5.0
_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    """What orjson does not know (what ``langgraph_api.serde.default`` covers)."""
    if hasattr(obj, "model_dump") and not isinstance(obj, type):
        return obj.model_dump()
    if type(obj).__name__ == "Send" and hasattr(obj, "arg"):
        return {"node": obj.node, "args": obj.arg}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_asdict"):
        return obj._asdict()
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    return str(obj)


def dumpb(obj: Any) -> bytes:
    """JSON bytes of a protocol value (messages via ``model_dump``, like the reference)."""
    return orjson.dumps(obj, default=_default, option=_OPTS)


def iso(ts: datetime | float | None) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts).astimezone()
    return ts.isoformat()


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    body = data if isinstance(data, bytes) else dumpb(data)
    out = b"event: " + event.encode() + b"\r\ndata: " + body + b"\r\n"
    if event_id is not None:
        out += b"id: " + event_id.encode() + b"\r\n"
    return out + b"\r\n"


class SSEResponse:
    """An ASGI response streaming ``(event, data, id)`` triples with heartbeats.

    A client that goes away closes the stream (``on_disconnect`` is called first).
    """

    def __init__(
        self,
        events: AsyncIterator[tuple[str, Any, str | None]],
        headers: dict[str, str] | None = None,
        on_disconnect: Callable[[], Any] | None = None,
    ) -> None:
        self.events = events
        self.headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-store",
            "x-accel-buffering": "no",
            **(headers or {}),
        }
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in self.headers.items()],
            }
        )
        lock = asyncio.Lock()
        last_sent = time.monotonic()

        async def body(data: bytes) -> None:
            nonlocal last_sent
            async with lock:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            last_sent = time.monotonic()

        async def stream() -> None:
            async with contextlib.aclosing(self.events) as events:
                try:
                    async for event, data, event_id in events:
                        await body(frame(event, data, event_id))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - told to the client, as the reference does
                    logger.exception("stream failed")
                    await body(frame("error", {"error": type(exc).__name__, "message": str(exc)}))

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(max(HEARTBEAT_SECONDS - (time.monotonic() - last_sent), 0.05))
                if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
                    await body(HEARTBEAT)

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        stream_task = asyncio.ensure_future(stream())
        disconnect_task = asyncio.ensure_future(disconnected())
        beat = asyncio.ensure_future(heartbeat())
        tasks = (stream_task, disconnect_task, beat)
        try:
            await asyncio.wait({stream_task, disconnect_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
        if not (stream_task.done() and not stream_task.cancelled()):
            if self.on_disconnect is not None:
                with contextlib.suppress(Exception):
                    await self.on_disconnect()
            return
        with contextlib.suppress(Exception):
            async with lock:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
