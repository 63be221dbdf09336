"""A one-node graph that answers with what its node sees of the caller's ``configurable``,
through its ``config`` argument and through ``get_config()``."""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.graph import END, START, MessagesState, StateGraph

KEYS = ("user_id", "model", "limits", "thread_id")


def echo(state: MessagesState, config: RunnableConfig) -> dict:
    argument = config.get("configurable") or {}
    current = get_config().get("configurable") or {}
    seen = {
        "argument": {k: argument.get(k) for k in KEYS},
        "get_config": {k: current.get(k) for k in KEYS},
    }
    return {"messages": [AIMessage(content=json.dumps(seen, sort_keys=True))]}


_builder = StateGraph(MessagesState)
_builder.add_node("echo", echo)
_builder.add_edge(START, "echo")
_builder.add_edge("echo", END)
graph = _builder.compile(name="configurable_echo")
