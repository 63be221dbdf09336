"""Graph preparation for the worker: unlabelled nodes become activities, user graph untouched."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy

from deepagent_temporal.engine.worker import (
    DeepAgentPlugin,
    GraphLoadError,
    load_graph,
    prepare_builder,
)
from deepagent_temporal.engine.workflow import GRAPH_OPTIONS
from deepagent_temporal.examples import shapes


class S(TypedDict, total=False):
    xs: Annotated[list, operator.add]


def _graph():
    def closure_node(state):  # closures are fine
        return {"xs": ["c"]}

    def route(state):  # sync routing function
        return END

    g = StateGraph(S)
    g.add_node("a", closure_node, retry_policy=RetryPolicy(max_attempts=5))
    g.add_node("sub", shapes._sub_graph())
    g.add_edge(START, "a")
    g.add_conditional_edges("a", route, [END])
    return g.compile(name="prep", interrupt_before=["sub"])


def test_every_node_labelled_and_user_graph_untouched():
    graph = _graph()
    before = {n: (s.runnable, dict(s.metadata or {})) for n, s in graph.builder.nodes.items()}
    clone = prepare_builder(graph)
    assert set(clone.nodes) == {"a", "sub"}
    for spec in clone.nodes.values():
        assert spec.metadata["execute_in"] == "activity"
        assert spec.retry_policy is None
    assert clone.nodes["a"].metadata["retry_policy"].maximum_attempts == 5
    for name, spec in graph.builder.nodes.items():
        assert spec.runnable is before[name][0]
        assert (spec.metadata or {}) == before[name][1]
    route = clone.branches["a"]["route"].path
    assert asyncio.iscoroutinefunction(route.afunc)
    # the original graph still runs locally, unchanged
    assert asyncio.run(graph.ainvoke({"xs": []})) == {"xs": ["c"]}


def test_plugin_registers_one_activity_per_node_and_compile_options():
    graph = _graph()
    plugin = DeepAgentPlugin({"pkg.mod:prep": graph}, aliases={"prep": "pkg.mod:prep"})
    names = sorted(a.__temporal_activity_definition.name for a in plugin.activities)
    assert names == ["pkg.mod:prep.a", "pkg.mod:prep.sub"]
    assert GRAPH_OPTIONS["pkg.mod:prep"]["interrupt_before"] == ["sub"]
    assert GRAPH_OPTIONS["prep"]["canonical"] == "pkg.mod:prep"


def test_deep_agent_graph_prepares():
    clone = prepare_builder(shapes.deep_agent)
    assert {"model", "tools"} <= set(clone.nodes)
    plugin = DeepAgentPlugin({"deep": shapes.deep_agent})
    assert any(a.__temporal_activity_definition.name == "deep.model" for a in plugin.activities)


@pytest.mark.parametrize(
    "ref, needle",
    [
        ("nope_module_zz:x", "cannot import module"),
        ("deepagent_temporal.examples.shapes:missing", "has no attribute"),
        ("deepagent_temporal.examples.shapes", "package.module:attribute"),
        ("deepagent_temporal.examples.shapes:DEEP_SCRIPT", "not a compiled LangGraph graph"),
    ],
)
def test_load_graph_errors(ref, needle):
    with pytest.raises(GraphLoadError, match=needle):
        load_graph(ref)


def test_load_graph_accepts_graph_factory_and_builder():
    assert load_graph("deepagent_temporal.examples.shapes:fanout") is shapes.fanout
    assert load_graph("deepagent_temporal.examples.shapes:_fanout_graph").name == "fanout"
