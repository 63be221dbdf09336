"""The graph both servers serve in ``test_differential.py``: our gateway (through a worker)
and the reference server, ``langgraph dev``, in its own virtualenv.

Self-contained on purpose: it imports only LangGraph, langchain-core and the scripted
chat model (``deepagent_temporal.dev.scripted``, which needs nothing else), so the
reference server's venv runs it with ``runtime/`` on its path and no extra installed.
A model call that streams a tool call, the tool, a second model call that streams text:
the shape of an agent turn, with no LLM key.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from deepagent_temporal.dev.scripted import ScriptedChatModel

SCRIPT: list[Any] = [
    {
        "content": "Let me add them.",
        "tool_calls": [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_diff_1"}],
    },
    "The sum of 2 and 3 is 5.",
]

model = ScriptedChatModel(script=SCRIPT, token_delay=0.01)


async def agent(state: MessagesState) -> dict:
    return {"messages": [await model.ainvoke(state["messages"])]}


def tools(state: MessagesState) -> dict:
    call = state["messages"][-1].tool_calls[0]
    total = call["args"]["a"] + call["args"]["b"]
    return {"messages": [ToolMessage(content=str(total), tool_call_id=call["id"], name="add")]}


def route(state: MessagesState) -> str:
    return "tools" if getattr(state["messages"][-1], "tool_calls", None) else END


def _build() -> Any:
    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(name="differential")


graph = _build()
