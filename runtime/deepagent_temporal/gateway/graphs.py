"""Assistants: the graphs the gateway serves (``DEEPAGENT_GRAPH``), one assistant each.

``assistant_id`` (and ``graph_id``) is the graph's registered name: the compiled graph's
``name`` when it is set and unique among the served graphs, else the reference
(``package.module:attribute``). Workers register each graph under both, so either
starts the same graph; lookups accept both. The gateway imports the graphs only to
describe them (``/graph``, ``/schemas``); a graph that cannot be imported is still
served by reference (runs execute on the workers).
"""

from __future__ import annotations

import importlib
import logging
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger(__name__)

#: the name LangGraph gives a graph compiled without one
DEFAULT_NAME = "LangGraph"
_CREATED = datetime(2024, 1, 1, tzinfo=UTC).isoformat()


@dataclass
class Assistant:
    assistant_id: str
    #: what the workflow is started with (the worker's registered reference)
    reference: str
    graph: Any = None

    def as_json(self) -> dict[str, Any]:
        return {
            "assistant_id": self.assistant_id,
            "graph_id": self.assistant_id,
            "config": {},
            "context": {},
            "metadata": {"created_by": "system", "reference": self.reference},
            "name": self.assistant_id,
            "description": None,
            "created_at": _CREATED,
            "updated_at": _CREATED,
            "version": 1,
        }


def _load(reference: str) -> Any:
    module_name, _, attr = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if callable(obj) and not hasattr(obj, "get_graph") and not hasattr(obj, "compile"):
        obj = obj()
    if hasattr(obj, "compile") and not hasattr(obj, "get_graph"):
        obj = obj.compile()
    return obj


class Assistants:
    """The served graphs, by assistant id."""

    def __init__(self, spec: str, *, load: bool = True) -> None:
        refs = [r.strip() for r in (spec or "").split(",") if r.strip()]
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")
        graphs: dict[str, Any] = {}
        for ref in refs:
            if not load:
                graphs[ref] = None
                continue
            try:
                graphs[ref] = _load(ref)
            except Exception as exc:  # noqa: BLE001 - served by reference all the same
                logger.warning("cannot import %s (%s); serving it by reference", ref, exc)
                graphs[ref] = None
        names = [getattr(g, "name", None) for g in graphs.values()]
        self.by_id: dict[str, Assistant] = {}
        self.aliases: dict[str, str] = {}
        for ref, graph in graphs.items():
            name = getattr(graph, "name", None)
            usable = name and name != DEFAULT_NAME and names.count(name) == 1
            aid = name if usable else ref
            self.by_id[aid] = Assistant(aid, ref, graph)
            self.aliases[ref] = aid
        if len(self.by_id) == 1:  # the reference server's default assistant of a graph
            only = next(iter(self.by_id))
            self.aliases[str(uuid.uuid5(uuid.NAMESPACE_DNS, only))] = only

    def get(self, assistant_id: str | None) -> Assistant | None:
        if not assistant_id:
            return next(iter(self.by_id.values())) if len(self.by_id) == 1 else None
        aid = self.aliases.get(assistant_id, assistant_id)
        return self.by_id.get(aid)

    def by_reference(self, reference: str | None) -> Assistant | None:
        if reference is None:
            return None
        return self.get(reference)

    def search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for a in self.by_id.values():
            if body.get("graph_id") and body["graph_id"] not in (a.assistant_id, a.reference):
                continue
            if body.get("name") and body["name"] != a.assistant_id:
                continue
            meta = body.get("metadata") or {}
            if any(a.as_json()["metadata"].get(k) != v for k, v in meta.items()):
                continue
            out.append(a.as_json())
        offset = int(body.get("offset") or 0)
        return out[offset : offset + int(body.get("limit") or 10)]


def drawable(assistant: Assistant, xray: bool = False) -> dict[str, Any]:
    """``GET /assistants/{id}/graph``: the graph's nodes and edges (``Graph.to_json``)."""
    if assistant.graph is None:
        return {"nodes": [], "edges": []}
    return assistant.graph.get_graph(xray=xray).to_json()


def schemas(assistant: Assistant) -> dict[str, Any]:
    """``GET /assistants/{id}/schemas``: JSON schemas of input, output, state, config."""
    g = assistant.graph
    out: dict[str, Any] = {"graph_id": assistant.assistant_id}
    for key, getter in (
        ("input_schema", "get_input_jsonschema"),
        ("output_schema", "get_output_jsonschema"),
        ("config_schema", "get_config_jsonschema"),
        ("context_schema", "get_context_jsonschema"),
    ):
        try:
            out[key] = getattr(g, getter)() if g is not None else None
        except Exception:  # noqa: BLE001 - a schema LangGraph cannot describe
            out[key] = None
    out["state_schema"] = out.get("input_schema")
    if g is not None:
        try:
            out["state_schema"] = (
                g.get_state_jsonschema()
                if hasattr(g, "get_state_jsonschema")
                else out["state_schema"]
            )
        except Exception:  # noqa: BLE001
            pass
    return out
