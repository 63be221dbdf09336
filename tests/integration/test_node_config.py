"""A node sees the caller's ``configurable`` values in its activity, as in plain LangGraph
(the Temporal plugin's config stripping keeps LangGraph's own keys only)."""

from __future__ import annotations

import json

import pytest

from tests.integration import configurable_graph
from tests.integration.agents import client_agent, thread_config

pytestmark = pytest.mark.integration

GRAPH = "tests.integration.configurable_graph:graph"


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(GRAPH, "node-config")


async def test_a_node_sees_the_callers_configurable(temporal_client, worker):
    config = thread_config("cfg")
    caller = {"user_id": "u-7", "model": "small", "limits": {"tokens": 5, "tags": ["a", "b"]}}
    config["configurable"].update(caller)
    agent = client_agent(temporal_client, worker, GRAPH)
    result = await agent.ainvoke({"messages": [("user", "who am I?")]}, config)
    seen = json.loads(result["messages"][-1].content)

    local = await configurable_graph.graph.ainvoke({"messages": [("user", "who am I?")]}, config)
    assert seen == json.loads(local["messages"][-1].content)  # as in plain LangGraph
    expected = {**caller, "thread_id": config["configurable"]["thread_id"]}
    assert seen == {"argument": expected, "get_config": expected}
