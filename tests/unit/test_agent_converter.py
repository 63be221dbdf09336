"""The data converter round-trips LangChain / LangGraph values; plain JSON stays JSON."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.types import Command, Interrupt, Send
from temporalio.contrib.workflow_streams import PublishEntry, PublishInput

from deepagent_temporal.converter import ENCODING, data_converter, needs_langgraph_encoding
from deepagent_temporal.engine.activity import NodeActivityInput, NodeActivityOutput
from deepagent_temporal.engine.workflow import RunRequest

conv = data_converter.payload_converter


def roundtrip(value):
    [payload] = conv.to_payloads([value])
    return payload, conv.from_payloads([payload])[0]


def test_messages_round_trip_as_objects():
    state = {
        "messages": [
            HumanMessage(content="hi", id="h1"),
            AIMessage(
                content="calling",
                id="a1",
                tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}],
            ),
            ToolMessage(content="1", tool_call_id="c1", id="t1"),
        ]
    }
    payload, back = roundtrip(state)
    assert payload.metadata["encoding"].decode() == ENCODING
    assert back == state
    assert isinstance(back["messages"][1], AIMessage)
    assert back["messages"][1].tool_calls[0]["name"] == "add"


def test_commands_sends_interrupts_round_trip():
    value = [
        Command(update={"messages": [AIMessage(content="x", id="m")]}, goto="tools"),
        Command(goto=[Send("write", {"topic": "a"})]),
    ]
    _, back = roundtrip(value)
    assert isinstance(back[0], Command) and back[0].goto == "tools"
    assert isinstance(back[1].goto[0], Send) and back[1].goto[0].arg == {"topic": "a"}
    _, back = roundtrip((Interrupt(value={"q": "Deploy?"}, id="i1"),))
    assert back[0].value == {"q": "Deploy?"}


def test_wire_dataclasses_round_trip():
    inp = NodeActivityInput(
        args=({"messages": [HumanMessage(content="hi", id="h")]},),
        kwargs={"config": {"tags": []}},
        langgraph_config={"configurable": {}},
        node="model",
        namespace=("tools:1",),
    )
    _, back = roundtrip(inp)
    assert list(back.args) == list(inp.args) and tuple(back.namespace) == inp.namespace
    assert (back.kwargs, back.langgraph_config, back.node) == (
        inp.kwargs,
        {"configurable": {}},
        "model",
    )
    out = NodeActivityOutput(result=[Command(goto="x")], token_summary=[{"token_count": 3}])
    _, back = roundtrip(out)
    assert back.result[0].goto == "x" and back.token_summary == [{"token_count": 3}]
    _, back = roundtrip(RunRequest(graph=None, input={"n": 1}))
    assert back == RunRequest(graph=None, input={"n": 1})


def test_plain_json_and_temporal_types_keep_the_default_encoding():
    for value in ({"a": [1, "x", None, {"b": True}]}, [1, 2], "s", 3, None):
        assert not needs_langgraph_encoding(value)
        payload, back = roundtrip(value)
        assert payload.metadata["encoding"].decode() != ENCODING
        assert back == value
    signal = PublishInput(
        items=[PublishEntry(topic="t", data="eA==")], publisher_id="p", sequence=1
    )
    assert not needs_langgraph_encoding(signal)
    payload, _ = roundtrip(signal)
    assert payload.metadata["encoding"].decode() == "json/plain"
