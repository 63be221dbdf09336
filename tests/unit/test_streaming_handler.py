"""TokenCapturingHandler: capture through LangChain's real callback path (no Redis here)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tracers._streaming import _StreamingCallbackHandler

from deepagent_temporal import TokenCapturingHandler
from deepagent_temporal.dev.scripted import ScriptedChatModel, ScriptedModelError, split_tokens

TEXT = "The quick brown fox jumps over the lazy dog, twice."


class PlainHandler(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class PlainAsyncHandler(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def tokens_of(events: list[dict], llm_call: int | None = None) -> list[dict]:
    return [
        e
        for e in events
        if e["type"] == "token" and (llm_call is None or e["llm_call"] == llm_call)
    ]


def make_handler(**kw: Any) -> tuple[TokenCapturingHandler, list[dict]]:
    got: list[dict] = []
    h = TokenCapturingHandler(node=kw.pop("node", "agent"), sink=got.append, **kw)
    return h, got


def test_handler_satisfies_streaming_protocol():
    h = TokenCapturingHandler(node="n")
    assert isinstance(h, _StreamingCallbackHandler)
    assert h.run_inline is True
    assert not isinstance(PlainHandler(), _StreamingCallbackHandler)


async def test_ainvoke_streams_only_with_our_handler():
    model = ScriptedChatModel(script=[TEXT])
    plain, plain_async = PlainHandler(), PlainAsyncHandler()
    result = await model.ainvoke("hi", config={"callbacks": [plain, plain_async]})
    assert result.content == TEXT
    assert plain.tokens == [] and plain_async.tokens == []  # ainvoke did not stream

    h, got = make_handler()
    plain2 = PlainHandler()
    result = await model.ainvoke("hi", config={"callbacks": [h, plain2]})
    await h.flush()
    toks = tokens_of(got)
    assert "".join(e["token"] for e in toks) == result.content == TEXT
    assert [e["index"] for e in toks] == list(range(len(split_tokens(TEXT))))
    assert plain2.tokens  # the plain handler now sees tokens too: the model streamed
    assert got[0]["type"] == "llm_start" and got[-1]["type"] == "llm_end"
    assert got[-1]["token_count"] == len(toks)
    assert {e["message_id"] for e in toks} == {result.id}


async def test_a_call_start_says_how_far_the_workflow_stream_went():
    """``stream_offset`` (the stream's length when the node was scheduled) is stamped on
    every ``llm_start`` and nothing else: the gateway's ordering needs no query."""
    model = ScriptedChatModel(script=[TEXT, TEXT])
    h, got = make_handler(stream_offset=7)
    await model.ainvoke("hi", config={"callbacks": [h]})
    await model.ainvoke("again", config={"callbacks": [h]})
    await h.flush()
    assert [e.get("stream_offset") for e in got if e["type"] == "llm_start"] == [7, 7]
    assert all("stream_offset" not in e for e in got if e["type"] != "llm_start")
    plain, got_plain = make_handler()  # a handler without it stamps nothing
    await model.ainvoke("hi", config={"callbacks": [plain]})
    await plain.flush()
    assert all("stream_offset" not in e for e in got_plain)


async def test_sync_invoke_on_loop_thread_and_generic_fake_model():
    # model.invoke called from a sync function on the loop thread (no executor)
    h, got = make_handler()
    model = ScriptedChatModel(script=[TEXT])
    result = model.invoke([HumanMessage("hi")], config={"callbacks": [h]})
    summaries = await h.flush()
    assert "".join(e["token"] for e in tokens_of(got)) == result.content
    assert summaries[0]["token_count"] == len(split_tokens(TEXT))


async def test_sync_executor_threads_lose_nothing():
    """Sync nodes run in executor threads: events are handed over thread-safely, in order."""
    h, got = make_handler()
    text = "x" * 3000
    model = ScriptedChatModel(script=[text], split="chars")

    def sync_node() -> str:
        assert threading.current_thread() is not threading.main_thread()
        return model.invoke("hi", config={"callbacks": [h]}).content

    results = await asyncio.gather(*[asyncio.to_thread(sync_node) for _ in range(4)])
    summaries = await h.flush()
    assert all(r == text for r in results)
    calls = sorted({e["llm_call"] for e in got})
    assert calls == [0, 1, 2, 3]
    for c in calls:
        toks = tokens_of(got, c)
        assert [e["index"] for e in toks] == list(range(3000))
        assert "".join(e["token"] for e in toks) == text
    assert sorted(s["token_count"] for s in summaries) == [3000] * 4
    assert h.events_emitted == len(got) == 4 * 3002


async def test_index_resets_per_call_and_llm_call_counts():
    h, got = make_handler()
    model = ScriptedChatModel(script=["one two three", "four five"], mode="sequential")
    r1 = await model.ainvoke("a", config={"callbacks": [h]})
    r2 = await model.ainvoke("b", config={"callbacks": [h]})
    summaries = await h.flush()
    t0, t1 = tokens_of(got, 0), tokens_of(got, 1)
    assert [e["index"] for e in t0] == [0, 1, 2]
    assert [e["index"] for e in t1] == [0, 1]
    assert "".join(e["token"] for e in t0) == r1.content
    assert "".join(e["token"] for e in t1) == r2.content
    assert t0[0]["message_id"] != t1[0]["message_id"]
    assert [(s["llm_call"], s["token_count"]) for s in summaries] == [(0, 3), (1, 2)]


async def test_concurrent_calls_in_one_node_are_keyed_by_run_id():
    h, got = make_handler()
    model = ScriptedChatModel(script=["alpha beta gamma delta epsilon"], token_delay=0.001)
    results = await asyncio.gather(
        *[model.ainvoke("q", config={"callbacks": [h]}) for _ in range(3)]
    )
    await h.flush()
    by_call: dict[int, list[dict]] = {}
    for e in tokens_of(got):
        by_call.setdefault(e["llm_call"], []).append(e)
    assert sorted(by_call) == [0, 1, 2]
    # interleaved in time, yet each call is complete and ordered
    order = [e["llm_call"] for e in tokens_of(got)]
    assert order != sorted(order)
    for evs in by_call.values():
        assert [e["index"] for e in evs] == list(range(5))
        assert "".join(e["token"] for e in evs) == results[0].content
        assert len({e["message_id"] for e in evs}) == 1


async def test_tool_call_chunks_are_carried():
    h, got = make_handler()
    args = {"path": "/workspace/notes.md", "limit": 20}
    model = ScriptedChatModel(
        script=[
            {
                "content": "Let me look.",
                "tool_calls": [{"name": "read_file", "args": args, "id": "call_1"}],
            }
        ]
    )
    result = await model.ainvoke("q", config={"callbacks": [h]})
    await h.flush()
    toks = tokens_of(got)
    assert result.tool_calls[0]["args"] == args
    tcc = [c for e in toks for c in e.get("tool_call_chunks", [])]
    assert tcc[0]["name"] == "read_file" and tcc[0]["id"] == "call_1"
    assert json.loads("".join(c["args"] for c in tcc)) == args
    assert "".join(e["token"] for e in toks) == "Let me look."
    assert [e["index"] for e in toks] == list(range(len(toks)))


async def test_temporal_path_batches_not_one_per_token():
    batches: list[list[dict]] = []

    async def temporal_path(events: list[dict]) -> None:
        batches.append(events)

    h = TokenCapturingHandler(node="n", temporal_publish=temporal_path, temporal_max_batch=100)
    model = ScriptedChatModel(script=["y" * 1000], split="chars")
    await model.ainvoke("q", config={"callbacks": [h]})
    summaries = await h.flush()
    flat = [e for b in batches for e in b]
    assert [e["index"] for e in flat if e["type"] == "token"] == list(range(1000))
    assert all(e["source"] == "temporal" for e in flat)
    assert len(batches) <= 12
    assert summaries == [
        {
            "token_count": 1000,
            "llm_call": 0,
            "message_id": flat[1]["message_id"],
            "transport": "temporal",
            "node": "n",
            "attempt": 1,
        }
    ]
    assert len(json.dumps(summaries[0])) < 300


async def test_temporal_path_time_based_batching_during_the_call():
    """Batches leave during the LLM call (every temporal_batch_interval), not only at flush."""
    batches: list[tuple[int, int]] = []
    emitted = [0]

    async def temporal_path(events: list[dict]) -> None:
        batches.append((len(events), emitted[0]))

    def on_token(tok: str, ts: float) -> None:
        emitted[0] += 1

    h = TokenCapturingHandler(
        node="n", temporal_publish=temporal_path, temporal_batch_interval=0.02
    )
    model = ScriptedChatModel(
        script=["z" * 60], split="chars", token_delay=0.002, on_token=on_token
    )
    await model.ainvoke("q", config={"callbacks": [h]})
    await h.flush()
    assert sum(n for n, _ in batches) == 62
    assert len(batches) >= 2
    assert batches[0][1] < 60  # first batch published while the model was still streaming


async def test_temporal_retries_then_raises_in_flush():
    calls = [0]

    async def flaky(events: list[dict]) -> None:
        calls[0] += 1
        if calls[0] <= 2:
            raise RuntimeError("transient")

    h = TokenCapturingHandler(node="n", temporal_publish=flaky)
    await ScriptedChatModel(script=["a b c"]).ainvoke("q", config={"callbacks": [h]})
    await h.flush()
    assert calls[0] == 3

    async def broken(events: list[dict]) -> None:
        raise RuntimeError("down")

    h = TokenCapturingHandler(node="n", temporal_publish=broken, temporal_retries=1)
    await ScriptedChatModel(script=["a b c"]).ainvoke("q", config={"callbacks": [h]})
    with pytest.raises(RuntimeError, match="Temporal path"):
        await h.flush()


async def test_retry_attempt_emits_reset_first():
    h, got = make_handler(attempt=2, task_id="act-7")
    await ScriptedChatModel(script=["a b"]).ainvoke("q", config={"callbacks": [h]})
    await h.flush()
    assert got[0]["type"] == "reset"
    assert got[0]["attempt"] == 1 and got[0]["task_id"] == "act-7"
    assert all(e["attempt"] == 2 for e in got[1:])
    assert h.temporal_events[0]["type"] == "reset"


async def test_model_error_ends_the_call_with_error():
    h, got = make_handler()
    model = ScriptedChatModel(script=["one two three four"], fail_after_tokens=2)
    with pytest.raises(ScriptedModelError):
        await model.ainvoke("q", config={"callbacks": [h]})
    summaries = await h.flush()
    assert [e["token"] for e in tokens_of(got)] == ["one", " two"]
    assert got[-1]["type"] == "llm_end" and "ScriptedModelError" in got[-1]["error"]
    assert summaries[0]["token_count"] == 2 and "error" in summaries[0]


def test_handler_without_event_loop_keeps_events():
    h = TokenCapturingHandler(node="n")
    result = ScriptedChatModel(script=[TEXT]).invoke("q", config={"callbacks": [h]})
    toks = [e for e in h.temporal_events if e["type"] == "token"]
    assert "".join(e["token"] for e in toks) == result.content


async def test_inside_langgraph_sync_async_nodes_and_subgraph_namespace():
    from langgraph.graph import END, START, MessagesState, StateGraph

    model = ScriptedChatModel(script=["sub agent says hi", "async node reply", "sync node reply"])

    def sub_node(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    sub = StateGraph(MessagesState).add_node("inner", sub_node)
    sub.add_edge(START, "inner").add_edge("inner", END)
    subgraph = sub.compile()

    async def async_node(state: MessagesState) -> dict:
        out = await subgraph.ainvoke(state)
        reply = await model.ainvoke(out["messages"])
        return {"messages": [*out["messages"][len(state["messages"]) :], reply]}

    def sync_node(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("a", async_node).add_node("s", sync_node)
    g.add_edge(START, "a").add_edge("a", "s").add_edge("s", END)
    graph = g.compile()

    h, got = make_handler(node=None)
    out = await graph.ainvoke({"messages": [HumanMessage("hello")]}, config={"callbacks": [h]})
    await h.flush()
    ai = [m for m in out["messages"] if isinstance(m, AIMessage)]
    assert [m.content for m in ai] == ["sub agent says hi", "async node reply", "sync node reply"]
    for k, msg in enumerate(ai):
        toks = tokens_of(got, k)
        assert "".join(e["token"] for e in toks) == msg.content
        assert [e["index"] for e in toks] == list(range(len(toks)))
    sub_tok = tokens_of(got, 0)[0]
    assert sub_tok["node"] == "inner" and len(sub_tok["namespace"]) == 1
    assert sub_tok["namespace"][0].startswith("a:")
    assert tokens_of(got, 1)[0]["namespace"] == []
    assert tokens_of(got, 1)[0]["node"] == "a" and tokens_of(got, 2)[0]["node"] == "s"


def test_handler_is_not_a_v2_streaming_handler():
    from langchain_core.tracers._streaming import _V2StreamingCallbackHandler

    assert not isinstance(TokenCapturingHandler(node="n"), _V2StreamingCallbackHandler)


async def test_nostream_tagged_calls_are_captured_and_flagged():
    """SummarizationMiddleware tags its summary call `nostream`: captured, but marked."""
    h, got = make_handler()
    model = ScriptedChatModel(script=["summary text", "answer"], mode="sequential")
    await model.ainvoke("q", config={"callbacks": [h], "tags": ["nostream"]})
    await model.ainvoke("q", config={"callbacks": [h]})
    await h.flush()
    assert all(e.get("nostream") for e in got if e["llm_call"] == 0)
    assert not any(e.get("nostream") for e in got if e["llm_call"] == 1)
    assert "".join(e["token"] for e in tokens_of(got, 0)) == "summary text"


def test_backend_status_without_io():
    from deepagent_temporal import RedisStreamBackend

    b = RedisStreamBackend("redis://127.0.0.1:1")
    assert b.status()["redis"] == "up"
    b.circuit.record_failure()
    assert b.status()["redis"] == "down" and b.status()["failures"] == 1
