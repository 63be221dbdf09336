"""The ASGI app: the LangGraph Agent Server's HTTP API over Temporal and Redis.

Stateless: every request reads what it needs from Temporal (threads, runs, state,
workflow streams) and Redis (live tokens), so any replica serves any request and any
stream. See ``docs/gateway.md``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.gateway import graphs as graph_views
from deepagent_temporal.gateway.cursor import Cursor, CursorError
from deepagent_temporal.gateway.graphs import Assistants
from deepagent_temporal.gateway.runs import RunRef, Runs, stream_modes
from deepagent_temporal.gateway.sse import SSEResponse, dumpb
from deepagent_temporal.gateway.stream import SegmentStream, StreamSpec
from deepagent_temporal.gateway.threads import ApiError, Threads

logger = logging.getLogger(__name__)
VERSION = "0.1.0"
#: paths served without an API key (probes)
OPEN_PATHS = frozenset({"/ok"})


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumpb(content)


class Gateway:
    """Everything a request needs; one per process."""

    def __init__(
        self,
        client: Client,
        assistants: Assistants,
        task_queue: str,
        redis: Any = None,
    ) -> None:
        self.client = client
        self.assistants = assistants
        self.threads = Threads(client)
        self.runs = Runs(client, self.threads, assistants, task_queue)
        self.redis = redis

    # ------------------------------------------------------------- streaming

    def stream(
        self,
        ref: RunRef,
        modes: list[str],
        *,
        subgraphs: bool = False,
        cursor: Cursor | None = None,
        on_disconnect: str = "continue",
        delete_after: bool = False,
        headers: dict[str, str] | None = None,
    ) -> SSEResponse:
        spec = StreamSpec(
            set(modes),
            subgraphs,
            {
                "thread_id": ref.thread_id,
                "run_id": ref.run_id,
                "assistant_id": ref.assistant_id,
                "graph_id": ref.assistant_id,
            },
        )
        segment = SegmentStream(
            self.runs.reader,
            self.redis,
            self.runs.handle(ref),
            ref.temporal_run_id,
            ref.segment,
            ref.start_offset,
            spec,
            cursor,
        )

        async def events() -> AsyncIterator[tuple[str, Any, str | None]]:
            if cursor is None:
                yield "metadata", {"run_id": ref.run_id, "attempt": 1}, segment.last_id()
            items = segment.items()
            async with contextlib.aclosing(items):
                async for item in items:
                    yield item
            outcome = await segment.outcome()
            if outcome is not None:
                yield "error", {"error": outcome[0], "message": outcome[1]}, segment.last_id()
            else:
                status = "interrupted" if segment.paused else "success"
                yield "end", {"run_id": ref.run_id, "status": status}, segment.last_id()
            if delete_after:
                with contextlib.suppress(Exception):
                    await self.threads.delete_execution(ref.thread_id, ref.temporal_run_id)

        async def disconnected() -> None:
            if on_disconnect == "cancel":
                await self.runs.cancel(ref)

        location = f"/threads/{ref.thread_id}/runs/{ref.run_id}"
        return SSEResponse(
            events(),
            headers={
                "location": f"{location}/stream",
                "content-location": location,
                **(headers or {}),
            },
            on_disconnect=disconnected,
        )


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        import orjson

        data = orjson.loads(raw)
    except ValueError as exc:
        raise ApiError(422, f"invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


def _gw(request: Request) -> Gateway:
    return request.app.state.gateway


# ------------------------------------------------------------------ endpoints


async def ok(request: Request) -> Response:
    return JSON({"ok": True})


async def info(request: Request) -> Response:
    return JSON(
        {
            "version": VERSION,
            "server": "deepagent-temporal gateway",
            "flags": {"assistants": True, "crons": False, "langsmith": False},
            "metadata": {},
        }
    )


async def assistants_search(request: Request) -> Response:
    return JSON(_gw(request).assistants.search(await _body(request)))


async def assistants_count(request: Request) -> Response:
    return JSON(len(_gw(request).assistants.search({**(await _body(request)), "limit": 10**6})))


def _assistant(request: Request) -> Any:
    aid = request.path_params["assistant_id"]
    assistant = _gw(request).assistants.get(aid)
    if assistant is None:
        raise ApiError(404, f"Assistant {aid!r} not found")
    return assistant


async def assistant_get(request: Request) -> Response:
    return JSON(_assistant(request).as_json())


async def assistant_graph(request: Request) -> Response:
    xray = request.query_params.get("xray") in ("true", "1")
    return JSON(graph_views.drawable(_assistant(request), xray))


async def assistant_schemas(request: Request) -> Response:
    return JSON(graph_views.schemas(_assistant(request)))


async def threads_create(request: Request) -> Response:
    return JSON(await _gw(request).threads.create(await _body(request)))


async def threads_search(request: Request) -> Response:
    return JSON(await _gw(request).threads.search(await _body(request)))


async def thread_get(request: Request) -> Response:
    gw = _gw(request)
    return JSON(
        await gw.threads.as_json(await gw.threads.require(request.path_params["thread_id"]))
    )


async def thread_delete(request: Request) -> Response:
    await _gw(request).threads.delete(request.path_params["thread_id"])
    return Response(status_code=204)


async def thread_state(request: Request) -> Response:
    if request.method == "POST":
        body = await _body(request)
        return JSON(await _gw(request).runs.update_state(request.path_params["thread_id"], body))
    return JSON(await _gw(request).threads.state(request.path_params["thread_id"]))


async def thread_history(request: Request) -> Response:
    body = await _body(request) if request.method == "POST" else dict(request.query_params)
    limit = int(body.get("limit") or 10)
    return JSON(await _gw(request).threads.history(request.path_params["thread_id"], limit))


def _modes(body: dict[str, Any]) -> list[str]:
    return stream_modes(body.get("stream_mode"))


async def run_stream(request: Request) -> Response:
    gw = _gw(request)
    body = await _body(request)
    thread_id = request.path_params.get("thread_id")
    ref = await gw.runs.create(thread_id, body)
    return gw.stream(
        ref,
        _modes(body),
        subgraphs=bool(body.get("stream_subgraphs")),
        on_disconnect=body.get("on_disconnect") or "continue",
        delete_after=thread_id is None and (body.get("on_completion") or "delete") == "delete",
    )


async def run_join_stream(request: Request) -> Response:
    gw = _gw(request)
    ref = await gw.runs.resolve(request.path_params["thread_id"], request.path_params["run_id"])
    params = request.query_params
    modes = params.getlist("stream_mode")
    modes = stream_modes(
        modes[0] if len(modes) == 1 else modes, tuple(ref.stream_mode or ["values"])
    )
    cursor = None
    last = request.headers.get("last-event-id")
    if last and last != "-1":  # -1: from the start (the JS SDK's useStream on mount)
        try:
            cursor = Cursor.decode(last)
        except CursorError as exc:
            raise ApiError(422, str(exc)) from None
    cancel = params.get("cancel_on_disconnect") in ("true", "1")
    return gw.stream(
        ref,
        modes,
        subgraphs=params.get("stream_subgraphs") in ("true", "1"),
        cursor=cursor,
        on_disconnect="cancel" if cancel else "continue",
    )


async def run_create(request: Request) -> Response:
    gw = _gw(request)
    ref = await gw.runs.create(request.path_params.get("thread_id"), await _body(request))
    location = f"/threads/{ref.thread_id}/runs/{ref.run_id}"
    return JSON(await gw.runs.as_json(ref), headers={"content-location": location})


async def run_wait(request: Request) -> Response:
    gw = _gw(request)
    thread_id = request.path_params.get("thread_id")
    body = await _body(request)
    ref = await gw.runs.create(thread_id, body)
    result = await gw.runs.wait(ref)
    if thread_id is None and (body.get("on_completion") or "delete") == "delete":
        with contextlib.suppress(Exception):
            await gw.threads.delete_execution(ref.thread_id, ref.temporal_run_id)
    location = f"/threads/{ref.thread_id}/runs/{ref.run_id}"
    return JSON(result, headers={"content-location": location})


async def runs_list(request: Request) -> Response:
    params = request.query_params
    return JSON(
        await _gw(request).runs.list(
            request.path_params["thread_id"],
            int(params.get("limit") or 10),
            int(params.get("offset") or 0),
        )
    )


async def _ref(request: Request) -> RunRef:
    return await _gw(request).runs.resolve(
        request.path_params["thread_id"], request.path_params["run_id"]
    )


async def run_get(request: Request) -> Response:
    return JSON(await _gw(request).runs.as_json(await _ref(request)))


async def run_join(request: Request) -> Response:
    return JSON(await _gw(request).runs.wait(await _ref(request)))


async def run_cancel(request: Request) -> Response:
    ref = await _ref(request)
    wait = request.query_params.get("wait") in ("true", "1")
    await _gw(request).runs.cancel(ref, wait=wait)
    return Response(status_code=204 if not wait else 200)


ROUTES = [
    Route("/ok", ok),
    Route("/info", info),
    Route("/assistants/search", assistants_search, methods=["POST"]),
    Route("/assistants/count", assistants_count, methods=["POST"]),
    Route("/assistants/{assistant_id}", assistant_get),
    Route("/assistants/{assistant_id}/graph", assistant_graph),
    Route("/assistants/{assistant_id}/schemas", assistant_schemas),
    Route("/threads", threads_create, methods=["POST"]),
    Route("/threads/search", threads_search, methods=["POST"]),
    Route("/threads/{thread_id}", thread_get, methods=["GET"]),
    Route("/threads/{thread_id}", thread_delete, methods=["DELETE"]),
    Route("/threads/{thread_id}/state", thread_state, methods=["GET", "POST"]),
    Route("/threads/{thread_id}/history", thread_history, methods=["GET", "POST"]),
    Route("/threads/{thread_id}/runs/stream", run_stream, methods=["POST"]),
    Route("/threads/{thread_id}/runs/wait", run_wait, methods=["POST"]),
    Route("/threads/{thread_id}/runs", run_create, methods=["POST"]),
    Route("/threads/{thread_id}/runs", runs_list, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}", run_get, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/join", run_join, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/stream", run_join_stream, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/cancel", run_cancel, methods=["POST"]),
    Route("/runs/stream", run_stream, methods=["POST"]),
    Route("/runs/wait", run_wait, methods=["POST"]),
    Route("/runs", run_create, methods=["POST"]),
]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _rpc_error(request: Request, exc: Exception) -> Response:
    logger.warning("Temporal error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"Temporal: {exc}"}, status_code=503)


class ApiKeyAuth:
    """``x-api-key`` must be one of ``keys``; none configured: no auth, unless ``closed``
    (a keys file that holds no key) says why every request is refused."""

    def __init__(self, app: Any, keys: frozenset[str], closed: str | None = None) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.closed = closed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and (self.keys or self.closed)
            and scope["path"] not in OPEN_PATHS
            and scope["method"] != "OPTIONS"
        ):
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), b"")
            if not any(hmac.compare_digest(given, key) for key in self.keys):
                detail = self.closed or "Invalid or missing API key"
                await JSONResponse({"detail": detail}, 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    gateway: Gateway, api_keys: frozenset[str] = frozenset(), keys_file: str | None = None
) -> Starlette:
    """The ASGI app. With ``keys_file`` set, an empty ``api_keys`` fails closed: a keys file
    that holds no key (emptied Secret, unreadable mount) never means "no auth"."""
    closed = None
    if keys_file and not api_keys:
        closed = (
            f"no API key in {keys_file} ({WorkerEnv.name('gateway_api_keys_file')}): "
            f"the gateway refuses every request until the file holds one"
        )
        logger.error("%s", closed)
    elif not api_keys:
        logger.warning(
            "the gateway serves WITHOUT authentication: no API key configured "
            "(for local use only; set %s in production)",
            WorkerEnv.name("gateway_api_keys_file"),
        )
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["location", "content-location"],
            ),
            Middleware(ApiKeyAuth, keys=api_keys, closed=closed),
        ],
        exception_handlers={ApiError: _api_error, RPCError: _rpc_error},
    )
    app.state.gateway = gateway
    return app


def read_api_keys(path: str | None) -> frozenset[str]:
    """Keys of an API keys file: one a line, blank lines and ``#`` comments skipped."""
    if not path:
        return frozenset()
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except OSError as exc:  # the app then refuses every request (see create_app)
        logger.error("cannot read the API keys file %s: %s", path, exc)
        return frozenset()
    return frozenset(line for line in lines if line)
