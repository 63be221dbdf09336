"""The Python ``langgraph-sdk`` (unmodified) against ``deepagent-temporal serve``."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from deepagent_temporal.examples import shapes

pytestmark = pytest.mark.integration

DEEP = "deepagent_temporal.examples.shapes:deep_agent"
INPUT = {"messages": [{"role": "user", "content": "What is 2 + 3?"}]}


def _texts(parts, kind="AIMessageChunk"):
    """message id -> concatenated token text of ``messages`` events (model tokens; other
    ``kind``s: the whole messages nodes returned, e.g. ``tool``)."""
    out: dict[str, str] = {}
    for p in parts:
        if p.event == "messages":
            chunk, meta = p.data
            if chunk["type"] == kind:
                out[chunk["id"]] = out.get(chunk["id"], "") + chunk["content"]
    return out


async def test_stream_messages_tuple_exact_once(sdk):
    thread = await sdk.threads.create(metadata={"purpose": "test"})
    parts = [
        p
        async for p in sdk.runs.stream(
            thread["thread_id"], DEEP, input=INPUT, stream_mode=["messages-tuple", "values"]
        )
    ]
    events = [p.event for p in parts]
    assert events[0] == "metadata" and events[-1] == "end", events
    texts = sorted(_texts(parts).values())
    assert texts == sorted([shapes.DEEP_SCRIPT[0]["content"], shapes.DEEP_SCRIPT[1]]), texts
    # the tool's result, once, whole (LangGraph sends what a node returned unstreamed)
    assert list(_texts(parts, "tool").values()) == ["5"]
    final = [p for p in parts if p.event == "values"][-1].data
    assert final["messages"][-1]["content"] == shapes.DEEP_SCRIPT[1]


async def test_disconnect_then_join_stream_gets_exactly_the_rest(sdk, gateway):
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    first, run_id, last_id = [], None, None
    stream = sdk.runs.stream(
        tid,
        "deepagent_temporal.examples.shapes:long_agent",
        input=INPUT,
        stream_mode="messages-tuple",
    )
    async for p in stream:
        if p.event == "metadata":
            run_id = p.data["run_id"]
        first.append(p)
        last_id = p.id
        if sum(x.event == "messages" for x in first) >= 60:
            break  # the client goes away mid-answer
    await stream.aclose()
    rest = [
        p
        async for p in sdk.runs.join_stream(
            tid, run_id, last_event_id=last_id, stream_mode="messages-tuple"
        )
    ]
    assert all(p.event != "metadata" for p in rest)
    assert rest[-1].event == "end"
    merged: dict[str, str] = {}
    for part in (_texts(first), _texts(rest)):
        for mid, text in part.items():
            merged[mid] = merged.get(mid, "") + text
    assert sorted(merged.values()) == sorted(["Adding first.", shapes.LONG_TEXT])
    # the rest really was the rest: the reconnect started mid-answer
    assert sum(p.event == "messages" for p in rest) > 0
    # a second join from the same id is the same rest (any replica, any time)
    again = [
        p
        async for p in sdk.runs.join_stream(
            tid, run_id, last_event_id=last_id, stream_mode="messages-tuple"
        )
    ]
    assert _texts(again) == _texts(rest)


async def test_interrupt_and_resume_with_command(sdk):
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    parts = [
        p
        async for p in sdk.runs.stream(
            tid,
            "chat_approval",
            input={"messages": [{"role": "user", "content": "deploy"}]},
            stream_mode=["messages-tuple", "updates"],
        )
    ]
    interrupts = [
        p.data["__interrupt__"] for p in parts if p.event == "updates" and "__interrupt__" in p.data
    ]
    assert len(interrupts) == 1 and interrupts[0][0]["value"] == {"question": "Go ahead?"}
    assert list(_texts(parts).values()) == [shapes._chat_model.script[0]]
    assert parts[-1].event == "end" and parts[-1].data["status"] == "interrupted"
    state = await sdk.threads.get_state(tid)
    assert state["next"] == ["ask"]
    assert state["tasks"][0]["interrupts"][0]["value"] == {"question": "Go ahead?"}
    assert (await sdk.threads.get(tid))["status"] == "interrupted"

    resumed = [
        p
        async for p in sdk.runs.stream(
            tid,
            "chat_approval",
            command={"resume": "yes"},
            stream_mode=["messages-tuple", "values"],
        )
    ]
    assert list(_texts(resumed).values()) == [shapes._chat_model.script[1]]
    final = [p for p in resumed if p.event == "values"][-1].data
    assert [m["content"] for m in final["messages"]][-2:] == ["yes", shapes._chat_model.script[1]]
    assert (await sdk.threads.get(tid))["status"] == "idle"
    runs = await sdk.runs.list(tid)
    assert len(runs) == 2 and {r["status"] for r in runs} == {"success", "interrupted"}


async def test_state_and_history(sdk):
    thread = await sdk.threads.create(metadata={"owner": "history-test"})
    tid = thread["thread_id"]
    result = await sdk.runs.wait(tid, DEEP, input=INPUT)
    assert result["messages"][-1]["content"] == shapes.DEEP_SCRIPT[1]
    state = await sdk.threads.get_state(tid)
    assert state["values"]["messages"][-1]["content"] == shapes.DEEP_SCRIPT[1]
    assert state["next"] == [] and state["checkpoint"]["thread_id"] == tid
    history = await sdk.threads.get_history(tid)
    # (contents: ids the graph generates for id-less messages differ between replays)
    assert [m["content"] for m in history[0]["values"]["messages"]] == [
        m["content"] for m in state["values"]["messages"]
    ]
    found = await sdk.threads.search(metadata={"owner": "history-test"})
    assert [t["thread_id"] for t in found] == [tid]
    assert found[0]["metadata"]["graph_id"] == DEEP and found[0]["status"] == "idle"
    await sdk.threads.delete(tid)
    with pytest.raises(Exception) as err:
        await sdk.threads.get(tid)
    assert type(err.value).__name__ == "NotFoundError"


async def test_stateless_run_stream(sdk):
    parts = [
        p async for p in sdk.runs.stream(None, DEEP, input=INPUT, stream_mode="messages-tuple")
    ]
    assert parts[0].event == "metadata" and parts[-1].event == "end"
    assert sorted(_texts(parts).values()) == sorted(
        [shapes.DEEP_SCRIPT[0]["content"], shapes.DEEP_SCRIPT[1]]
    )


async def test_the_callers_configurable_reaches_the_nodes(sdk):
    caller = {"user_id": "u-7", "model": "small", "limits": {"tokens": 5, "tags": ["a"]}}
    thread = await sdk.threads.create()
    result = await sdk.runs.wait(
        thread["thread_id"],
        "configurable_echo",
        input={"messages": [{"role": "user", "content": "who am I?"}]},
        config={"configurable": caller},
    )
    seen = json.loads(result["messages"][-1]["content"])
    expected = {**caller, "thread_id": thread["thread_id"]}
    assert seen == {"argument": expected, "get_config": expected}
    with pytest.raises(httpx.HTTPStatusError) as refused:  # not an object: named, no 500
        await sdk.runs.wait(None, "configurable_echo", input={}, config={"configurable": [1]})
    assert refused.value.response.status_code == 422


async def test_cancel_stops_the_run_and_its_model_call(sdk, gateway):
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    run = await sdk.runs.create(tid, "deepagent_temporal.examples.shapes:long_agent", input=INPUT)
    seen = 0
    async for p in sdk.runs.join_stream(tid, run["run_id"], stream_mode="messages-tuple"):
        seen += p.event == "messages"
        if seen >= 40:
            break
    await sdk.runs.cancel(tid, run["run_id"], wait=True)
    assert (await sdk.runs.get(tid, run["run_id"]))["status"] == "interrupted"
    # the model call stopped: its Redis stream holds fewer tokens than the answer has
    await asyncio.sleep(1.0)
    events = await gateway.gateway.redis.read_all(tid, run["run_id"])
    tokens = [e for e in events if e.get("type") == "token"]
    assert len(tokens) < len(shapes.LONG_TEXT.split(" ")), len(tokens)
    assert (await sdk.threads.get(tid))["status"] == "idle"


async def test_api_key_required(gateway):
    import httpx
    from langgraph_sdk import get_client

    wrong = get_client(url=gateway.url, api_key="not-the-key")
    with pytest.raises(httpx.HTTPStatusError) as err:
        await wrong.assistants.search()
    assert err.value.response.status_code == 401
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.post("/assistants/search", json={})).status_code == 401
        assert (await http.get("/ok")).status_code == 200  # probes need no key
        ok = await http.post("/assistants/search", json={}, headers={"x-api-key": gateway.api_key})
        assert ok.status_code == 200
        assert DEEP in [a["assistant_id"] for a in ok.json()]


async def test_redis_killed_mid_stream_every_token_once(sdk, redis_server):
    """Redis SIGKILLed mid-answer behind the gateway: the SSE client still gets every
    token exactly once (the rest through the Temporal path / the durable record)."""
    thread = await sdk.threads.create()
    parts = []
    try:
        async for p in sdk.runs.stream(
            thread["thread_id"],
            "deepagent_temporal.examples.shapes:long_agent",
            input=INPUT,
            stream_mode="messages-tuple",
        ):
            parts.append(p)
            if sum(x.event == "messages" for x in parts) == 40:
                redis_server.kill()
    finally:
        if not redis_server.process.running:
            redis_server.start()
    assert parts[-1].event == "end"
    assert sorted(_texts(parts).values()) == sorted(["Adding first.", shapes.LONG_TEXT])


async def test_join_on_another_replica(sdk, gateway):
    """A stream left on one gateway resumes on a second one from its last event id."""
    from langgraph_sdk import get_client

    from deepagent_temporal.gateway.app import Gateway, create_app
    from tests.gateway.conftest import running_gateway

    gw = gateway.gateway
    replica = Gateway(gw.client, gw.assistants, gw.runs.task_queue, gw.redis)
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    first, run_id, last_id = [], None, None
    stream = sdk.runs.stream(
        tid,
        "chat_approval",
        input={"messages": [{"role": "user", "content": "plan"}]},
        stream_mode=["messages-tuple", "updates"],
    )
    async for p in stream:
        run_id = p.data["run_id"] if p.event == "metadata" else run_id
        first.append(p)
        last_id = p.id
        if sum(x.event == "messages" for x in first) == 5:
            break
    await stream.aclose()
    async with running_gateway(create_app(replica, frozenset({gateway.api_key}))) as url:
        other = get_client(url=url, api_key=gateway.api_key)
        rest = [
            p
            async for p in other.runs.join_stream(
                tid, run_id, last_event_id=last_id, stream_mode=["messages-tuple", "updates"]
            )
        ]
    text = "".join(_texts(first).values()) + "".join(_texts(rest).values())
    assert text == shapes._chat_model.script[0]
    assert any(p.event == "updates" and "__interrupt__" in p.data for p in rest)
