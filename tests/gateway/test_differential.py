"""Differential test: our gateway against the reference server, ``langgraph dev``.

Both serve the same graph (``differential_graph.py``: a streamed tool call, the tool, a
streamed answer; a scripted model, no LLM key). Through the unmodified Python SDK, both
must give the same sequence of SSE event names and the same shapes of chunks and
metadata for ``values``, ``updates`` and ``messages-tuple`` (keys, types, order: not
ids or timestamps), and both must accept their own event ids as ``last_event_id`` in
``runs.join_stream``. Where the gateway differs on purpose the difference is named
here and in ``docs/gateway.md`` ("Deliberate differences from the reference server").

The reference runs from ``.venv-langgraph-dev`` (``make langgraph-dev``, part of
``make deps``), offline: no tracing, no analytics, no version check, loopback only.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deepagent_temporal.converter import with_data_converter
from deepagent_temporal.dev.servers import ManagedProcess, free_port
from deepagent_temporal.gateway.app import Gateway, create_app
from deepagent_temporal.gateway.graphs import Assistants
from deepagent_temporal.transport.redis_reader import RedisStreamReader
from tests.gateway import differential_graph
from tests.gateway.conftest import running_gateway
from tests.integration.conftest import start_worker  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_VENV = Path(os.environ.get("LANGGRAPH_DEV_VENV") or ROOT / ".venv-langgraph-dev")
GRAPH_REF = "tests.gateway.differential_graph:graph"
ASSISTANT = "differential"
INPUT = {"messages": [{"role": "user", "content": "What is 2 + 3?"}]}
MODES = ["values", "updates", "messages-tuple"]
SCRIPT = differential_graph.SCRIPT


# ------------------------------------------------------------------------ servers


def _reference_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``langgraph dev`` serving the differential graph, offline, on loopback."""
    cli = REFERENCE_VENV / "bin" / "langgraph"
    if not cli.exists():
        pytest.fail(
            f"the reference server's venv is missing ({cli} not found): run "
            "`make langgraph-dev` (part of `make deps`; `make test` builds it)",
            pytrace=False,
        )
    work = tmp_path_factory.mktemp("langgraph-dev")
    config = {
        "dependencies": [str(ROOT / "runtime")],
        "graphs": {ASSISTANT: f"{Path(differential_graph.__file__).resolve()}:graph"},
        "disable_persistence": True,
    }
    (work / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    env = {
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGSMITH_API_KEY": "",
        "PYTHONUNBUFFERED": "1",
    }
    process = ManagedProcess(
        "langgraph-dev",
        [
            "/bin/sh",
            "-c",
            'cd "$0" && exec "$@"',  # in its own folder: it writes .langgraph_api/ there
            str(work),
            str(cli),
            "dev",
            "--config",
            str(work / "langgraph.json"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-browser",
            "--no-reload",
        ],
        work,
        env=env,
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_until(lambda: _reference_ok(url), 60)
        yield SimpleNamespace(url=url, process=process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ours(temporal_client, redis_server, start_worker):  # noqa: F811
    worker = start_worker(GRAPH_REF, "differential", redis=True)
    gw = Gateway(
        with_data_converter(temporal_client),
        Assistants(GRAPH_REF),
        worker.task_queue,
        RedisStreamReader(redis_server.url),
    )
    return SimpleNamespace(gateway=gw, worker=worker)


@pytest.fixture
async def servers(reference, ours):
    """Python SDK clients: ``{"reference": ..., "ours": ...}``."""
    from langgraph_sdk import get_client

    async with running_gateway(create_app(ours.gateway)) as url:
        yield {"reference": get_client(url=reference.url), "ours": get_client(url=url)}


# ---------------------------------------------------------------------- compare

#: ``messages`` metadata only the reference sends: its server's own fields, LangSmith's
#: (``ls_*``, ``lc_versions``) and the task's step, triggers and path (docs/gateway.md)
REFERENCE_ONLY_META = {
    "created_by",
    "langgraph_version",
    "langgraph_api_version",
    "langgraph_plan",
    "langgraph_host",
    "langgraph_api_url",
    "langgraph_step",
    "langgraph_triggers",
    "langgraph_path",
    "ls_integration",
    "ls_provider",
    "ls_model_type",
    "ls_model_name",
    "lc_versions",
}
#: ``messages`` metadata only we send: the node activity the call ran in
OURS_ONLY_META = {"langgraph_task_id"}


def shape(value: Any) -> Any:
    """Structure without the values: keys, nesting, JSON types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def events(parts: list[Any], server: str) -> list[Any]:
    """The parts to compare: our stream's last ``end`` event is a deliberate extra."""
    if server == "ours":
        assert parts[-1].event == "end" and parts[-1].data["status"] == "success", parts[-1]
        parts = parts[:-1]
    return parts


def signature(part: Any) -> Any:
    """What must be equal in an event of both servers."""
    if part.event != "messages":
        return part.event, shape(part.data)
    chunk, meta = part.data
    keys = set(meta) - REFERENCE_ONLY_META - OURS_ONLY_META
    return part.event, shape(chunk), shape({k: meta[k] for k in keys})


def texts(parts: list[Any]) -> dict[str, str]:
    """message id -> the text its ``messages`` events carry, in order."""
    out: dict[str, str] = {}
    for p in parts:
        if p.event == "messages":
            chunk = p.data[0]
            out[chunk["id"]] = out.get(chunk["id"], "") + chunk["content"]
    return out


async def _stream(client: Any, **kwargs: Any) -> list[Any]:
    thread = await client.threads.create()
    return [
        p
        async for p in client.runs.stream(
            thread["thread_id"], ASSISTANT, input=INPUT, stream_mode=MODES, **kwargs
        )
    ]


def _diff(ref: list[Any], ours: list[Any]) -> str:
    lines = []
    for i in range(max(len(ref), len(ours))):
        a = signature(ref[i]) if i < len(ref) else None
        b = signature(ours[i]) if i < len(ours) else None
        mark = "  " if a == b else "!="
        lines.append(f"{mark} {i:3} reference={a!r:.300}\n       ours     ={b!r:.300}")
    return "\n".join(lines)


async def test_same_events_chunks_and_metadata(servers):
    ref = events(await _stream(servers["reference"]), "reference")
    ours = events(await _stream(servers["ours"]), "ours")
    assert [p.event for p in ours] == [p.event for p in ref], _diff(ref, ours)
    assert [signature(p) for p in ours] == [signature(p) for p in ref], _diff(ref, ours)
    # the same messages: the two model calls' text and the tool's result
    expected = [SCRIPT[0]["content"], "5", SCRIPT[1]]
    for parts in (ref, ours):
        assert list(texts(parts).values()) == expected, texts(parts)
        final = [p for p in parts if p.event == "values"][-1].data
        assert [m["type"] for m in final["messages"]] == ["human", "ai", "tool", "ai"]


def _brief(part: Any) -> str:
    if part.event == "messages":
        return repr(part.data[0]["content"])
    if part.event == "updates":
        return "u:" + ",".join(part.data)
    return part.event


async def _cut_and_join(client: Any, after_messages: int) -> tuple[list[Any], list[Any]]:
    """A stream cut after ``after_messages`` ``messages`` events, then joined from the
    last event id it received."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first: list[Any] = []
    run_id = last_id = None
    stream = client.runs.stream(
        tid,
        ASSISTANT,
        input=INPUT,
        stream_mode=MODES,
        stream_resumable=True,
        on_disconnect="continue",
    )
    async for p in stream:
        first.append(p)
        if p.event == "metadata":
            run_id = p.data["run_id"]
        last_id = p.id or last_id
        if sum(x.event == "messages" for x in first) >= after_messages:
            break
    await stream.aclose()
    assert run_id and last_id, f"no run id or event id: {[(p.event, p.id) for p in first]}"
    # no stream_mode: the run's own modes (the reference reads one stream_mode from the
    # query string, the last: a list would be cut to messages-tuple there)
    rest = [p async for p in client.runs.join_stream(tid, run_id, last_event_id=last_id)]
    return first, rest


@pytest.mark.parametrize(
    "server,after_messages",
    [
        ("reference", 2),  # in the first model call
        ("reference", 10),  # in the second
        ("ours", 2),
        ("ours", 7),  # right after the tool's message, before its node's updates
        ("ours", 10),
    ],
)
async def test_join_stream_from_own_event_id(servers, server, after_messages):
    """Cut the stream, join with the last event id received: the two parts are the
    whole stream. (Not at 7 on the reference: its ids are millisecond stamps, two events
    of one millisecond share one, and a cut between them loses the second.)"""
    client = servers[server]
    whole = events(await _stream(client), server)
    first, rest = await _cut_and_join(client, after_messages)
    assert all(p.event != "metadata" for p in rest), [p.event for p in rest]
    joined = events(first + rest, server)
    assert [p.event for p in joined] == [p.event for p in whole], (
        f"first: {[_brief(p) for p in first]}\nrest: {[_brief(p) for p in rest]}\n"
        f"whole: {[_brief(p) for p in whole]}"
    )
    assert [signature(p) for p in joined] == [signature(p) for p in whole]
    assert list(texts(joined).values()) == [SCRIPT[0]["content"], "5", SCRIPT[1]]


async def test_join_stream_from_the_start(servers):
    """``last_event_id="-1"`` (the JS SDK's ``useStream`` rejoining on mount): the whole
    run again, ``metadata`` first, on both servers; while it runs and once it ended."""
    for name, client in servers.items():
        whole = [p.event for p in events(await _stream(client), name)]
        thread = await client.threads.create()
        run = await client.runs.create(
            thread["thread_id"], ASSISTANT, input=INPUT, stream_mode=MODES, stream_resumable=True
        )
        for _ in range(2):  # while it runs, then after it ended
            parts = [
                p
                async for p in client.runs.join_stream(
                    thread["thread_id"], run["run_id"], last_event_id="-1"
                )
            ]
            assert [p.event for p in events(parts, name)] == whole, name
            assert list(texts(parts).values()) == [SCRIPT[0]["content"], "5", SCRIPT[1]]


async def test_update_state_then_run(servers):
    """``threads.update_state`` on an idle thread, on both servers: the state shows the
    update (through the messages reducer), and the next run starts from it."""
    note = {"type": "ai", "content": "Noted: the user likes sums.", "id": "note-1"}
    seen: dict[str, Any] = {}
    for name, client in servers.items():
        thread = await client.threads.create()
        tid = thread["thread_id"]
        await client.runs.wait(tid, ASSISTANT, input=INPUT)
        answer = await client.threads.update_state(tid, {"messages": [note]}, as_node="agent")
        assert set(answer) >= {"checkpoint"}, answer
        assert {"thread_id", "checkpoint_id"} <= set(answer["checkpoint"]), answer
        state = await client.threads.get_state(tid)
        assert state["checkpoint"]["checkpoint_id"] == answer["checkpoint"]["checkpoint_id"]
        before = [m["content"] for m in state["values"]["messages"]]
        assert before[-1] == note["content"], (name, before)
        # the reducer replaces a message with the same id
        await client.threads.update_state(
            tid, {"messages": [{**note, "content": "Noted, again."}]}, as_node="agent"
        )
        again = (await client.threads.get_state(tid))["values"]["messages"]
        assert [m["content"] for m in again] == [*before[:-1], "Noted, again."], name
        follow = await client.runs.wait(
            tid, ASSISTANT, input={"messages": [{"role": "user", "content": "And 1 + 1?"}]}
        )
        seen[name] = [(m["type"], m["content"]) for m in follow["messages"]]
    assert seen["ours"] == seen["reference"], seen
    assert ("ai", "Noted, again.") in seen["ours"]


async def test_update_state_refusals(servers, ours):
    """What ours refuses, with the reason in the body."""
    import httpx

    client = servers["ours"]
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, ASSISTANT, input=INPUT)
    with pytest.raises(httpx.HTTPStatusError) as err:
        await client.threads.update_state(tid, {"messages": []}, as_node="no-such-node")
    assert err.value.response.status_code == 422
    assert "no-such-node" in err.value.response.json()["detail"]
    # the thread is untouched and still runs
    assert len((await client.threads.get_state(tid))["values"]["messages"]) == 4
    assert (await client.threads.get(tid))["status"] == "idle"
