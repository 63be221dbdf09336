"""Capture inside a real ``create_deep_agent`` agent (in process, no Temporal): tool calls,
two model calls, and a sub-agent's model calls reported with their own namespace."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from deepagent_temporal import TokenCapturingHandler
from deepagent_temporal.dev.scripted import ScriptedChatModel


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"Sunny in {city}"


def _tokens(events: list[dict], k: int) -> list[dict]:
    return [e for e in events if e["type"] == "token" and e["llm_call"] == k]


async def test_deep_agent_tool_call_and_two_model_calls():
    from deepagents import create_deep_agent

    model = ScriptedChatModel(
        script=[
            {
                "content": "Let me check.",
                "tool_calls": [{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}],
            },
            "It is sunny in Paris today.",
        ]
    )
    agent = create_deep_agent(model=model, tools=[get_weather], system_prompt="Be brief.")
    got: list[dict] = []
    handler = TokenCapturingHandler(sink=got.append)
    out = await agent.ainvoke(
        {"messages": [("user", "Weather in Paris?")]}, config={"callbacks": [handler]}
    )
    summaries = await handler.flush()
    ai = [m for m in out["messages"] if isinstance(m, AIMessage)]
    assert len(ai) == 2 and [s["token_count"] for s in summaries] == [
        len(_tokens(got, 0)),
        len(_tokens(got, 1)),
    ]
    for k, msg in enumerate(ai):
        toks = _tokens(got, k)
        assert "".join(e["token"] for e in toks) == msg.content
        assert [e["index"] for e in toks] == list(range(len(toks)))
        assert {e["node"] for e in toks} == {"model"}
    tcc = [c for e in _tokens(got, 0) for c in e.get("tool_call_chunks", [])]
    assert tcc[0]["name"] == "get_weather" and tcc[0]["id"] == "c1"


async def test_deep_agent_sub_agent_calls_are_nested():
    from deepagents import create_deep_agent

    def responder(messages):
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        if humans and humans[-1].content == "find three facts":
            return "Fact one. Fact two. Fact three."
        turns = sum(1 for m in messages if isinstance(m, AIMessage))
        if turns == 0:
            return {
                "content": "Delegating.",
                "tool_calls": [
                    {
                        "name": "task",
                        "id": "t1",
                        "args": {
                            "description": "find three facts",
                            "subagent_type": "general-purpose",
                        },
                    }
                ],
            }
        return "Done: three facts found."

    model = ScriptedChatModel(responder=responder)
    agent = create_deep_agent(model=model, system_prompt="Be brief.")
    got: list[dict] = []
    handler = TokenCapturingHandler(sink=got.append)
    out = await agent.ainvoke(
        {"messages": [("user", "Research please")]}, config={"callbacks": [handler]}
    )
    await handler.flush()
    assert out["messages"][-1].content == "Done: three facts found."
    texts = {k: "".join(e["token"] for e in _tokens(got, k)) for k in range(3)}
    assert texts == {
        0: "Delegating.",
        1: "Fact one. Fact two. Fact three.",
        2: "Done: three facts found.",
    }
    sub = _tokens(got, 1)[0]
    top = _tokens(got, 2)[0]
    assert top["namespace"] == [] and top["node"] == "model"
    assert len(sub["namespace"]) >= 1 and sub["namespace"][0].startswith("tools:")


async def test_summarization_middleware_two_calls_in_one_node():
    """Deep Agents' SummarizationMiddleware (wrap_model_call) makes a summary call and then
    the model call inside the same `model` node: two llm_calls, each indexed from 0; the
    summary call is tagged `nostream` and flagged as such."""
    from deepagents.backends import StateBackend
    from deepagents.middleware import SummarizationMiddleware
    from langchain.agents import create_agent

    summarizer = ScriptedChatModel(script=["Summary of the chat so far."])
    model = ScriptedChatModel(script=["The answer is 42."], mode="sequential")
    middleware = SummarizationMiddleware(
        model=summarizer, backend=StateBackend(), trigger=("messages", 3), keep=("messages", 1)
    )
    agent = create_agent(model=model, middleware=[middleware])
    history = [
        ("user", "q1"),
        ("ai", "a1"),
        ("user", "q2"),
        ("ai", "a2"),
        ("user", "final question"),
    ]
    got: list[dict] = []
    handler = TokenCapturingHandler(sink=got.append)
    out = await agent.ainvoke({"messages": history}, config={"callbacks": [handler]})
    summaries = await handler.flush()
    assert out["messages"][-1].content == "The answer is 42."
    assert len(summaries) == 2
    first, second = _tokens(got, 0), _tokens(got, 1)
    assert "".join(e["token"] for e in first) == "Summary of the chat so far."
    assert "".join(e["token"] for e in second) == "The answer is 42."
    assert [e["index"] for e in first] == list(range(len(first)))
    assert [e["index"] for e in second] == list(range(len(second)))
    assert {e["node"] for e in first + second} == {"model"}
    assert not any(e.get("nostream") for e in second)
    assert all(e.get("nostream") for e in first)
