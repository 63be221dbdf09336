"""The data converter revives only allowed types: hostile payloads are refused, nothing runs.

A ``binary/langgraph-msgpack`` payload names the ``(module, name)`` of each object in it;
whoever may start or signal a workflow picks those names. These tests build such payloads
by hand (as an attacker would) and check that ``from_payload`` raises
``UnsafePayloadError`` before anything is imported or called, while the types we
round-trip (and the ones a user registers) still decode.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import operator
import sys
import uuid
from typing import Annotated, TypedDict

import ormsgpack
import pydantic
import pytest
from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    ToolMessageChunk,
)
from langgraph.types import Command, Interrupt, Overwrite, Send
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from deepagent_temporal import converter
from deepagent_temporal.contract import RunRequest, RunState
from deepagent_temporal.converter import (
    ENCODING,
    UnsafePayloadError,
    allow_types,
    allow_types_from_spec,
    allowed_types,
    data_converter,
)
from deepagent_temporal.engine.activity import NodeActivityInput, NodeActivityOutput

conv = data_converter.payload_converter
lg_conv = converter.LangGraphPayloadConverter()

# LangGraph's msgpack extension codes (langgraph.checkpoint.serde.jsonplus)
SINGLE_ARG, POS_ARGS, KW_ARGS, METHOD, PYDANTIC_V2 = 0, 1, 2, 3, 5


def ext(code: int, *parts) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, ormsgpack.packb(parts))


def payload(value) -> Payload:
    return Payload(metadata={"encoding": ENCODING.encode()}, data=ormsgpack.packb(value))


@pytest.fixture(autouse=True)
def _own_allowlist(monkeypatch):
    """Each test starts from the built-in allowlist; registrations do not leak."""
    monkeypatch.setattr(converter, "_user_types", frozenset())
    monkeypatch.setattr(converter, "_serde", None)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def hostile_payloads(marker) -> dict[str, object]:
    touch = f"touch {marker}"
    return {
        "os.system": ext(SINGLE_ARG, "os", "system", touch),
        "os.getenv": ext(SINGLE_ARG, "os", "getenv", "HOME"),
        "subprocess.Popen": ext(POS_ARGS, "subprocess", "Popen", [["touch", str(marker)]]),
        "builtins.eval": ext(SINGLE_ARG, "builtins", "eval", f"open({str(marker)!r}, 'w')"),
        "builtins.exec": ext(SINGLE_ARG, "builtins", "exec", f"open({str(marker)!r}, 'w')"),
        "os.system as kwargs": ext(KW_ARGS, "os", "system", {"command": touch}),
        "os.system as a pydantic model": ext(PYDANTIC_V2, "os", "system", {}, "model_validate"),
        "os.system as a method": ext(METHOD, "os", "system", touch, "__call__"),
        "datetime.datetime.fromtimestamp": ext(METHOD, "datetime", "datetime", 0, "fromtimestamp"),
        # hidden in a state, inside a message, inside a Command: depth does not matter
        "os.system in a state": {"messages": [{"content": ext(SINGLE_ARG, "os", "system", touch)}]},
        "os.system in a Command": ext(
            KW_ARGS,
            "langgraph.types",
            "Command",
            {"update": {"messages": [ext(SINGLE_ARG, "os", "system", touch)]}},
        ),
        "os.system in a RunRequest": ext(
            KW_ARGS,
            "deepagent_temporal.contract.events",
            "RunRequest",
            {"graph": None, "input": ext(SINGLE_ARG, "os", "system", touch)},
        ),
    }


@pytest.mark.parametrize("case", list(hostile_payloads("m")))
def test_hostile_msgpack_is_refused_and_nothing_runs(case, marker):
    value = hostile_payloads(marker)[case]
    with pytest.raises(UnsafePayloadError) as info:
        conv.from_payloads([payload(value)])
    err = info.value
    assert not marker.exists()
    # a clear, non-retryable Temporal failure naming the type and the way to allow it
    assert isinstance(err, ApplicationError) and err.non_retryable
    assert err.type == "UnsafePayloadError"
    assert err.message.startswith("refusing to decode ")
    refused = case.split(" ")[0]
    assert f"{err.module}.{err.name}".startswith(refused.rsplit(".", 1)[0])
    if "method" not in case and "fromtimestamp" not in case:
        assert err.message.startswith(f"refusing to decode {refused}: not an allowed type; ")
        assert "deepagent_temporal.converter.allow_types(" in err.message


def test_getenv_payload_does_not_leak_the_environment(monkeypatch):
    monkeypatch.setenv("DEEPAGENT_TEST_SECRET", "s3cr3t-value")
    with pytest.raises(UnsafePayloadError) as info:
        lg_conv.from_payload(payload(ext(SINGLE_ARG, "os", "getenv", "DEEPAGENT_TEST_SECRET")))
    assert "s3cr3t-value" not in str(info.value)


def test_a_refused_module_is_never_imported(tmp_path, monkeypatch):
    canary = f"deepagent_canary_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{canary}.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\nclass Boom:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for code in (SINGLE_ARG, POS_ARGS, KW_ARGS, PYDANTIC_V2):
        arg = {} if code in (KW_ARGS, PYDANTIC_V2) else []
        with pytest.raises(UnsafePayloadError, match=f"refusing to decode {canary}.Boom"):
            lg_conv.from_payload(payload(ext(code, canary, "Boom", arg)))
    assert canary not in sys.modules
    assert not (tmp_path / "imported").exists()


LC_PROMPT = {
    "lc": 1,
    "type": "constructor",
    "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
    "kwargs": {"template": "{x}", "input_variables": ["x"]},
}
LC2_SYSTEM = {"lc": 2, "type": "constructor", "id": ["os", "system"], "args": ["true"]}


@pytest.mark.parametrize("lc", [LC_PROMPT, LC2_SYSTEM], ids=["lc1-PromptTemplate", "lc2-os"])
def test_lc_constructor_naming_a_non_allowed_class_is_refused(lc):
    # in a msgpack payload (anywhere, even inside an allowed object's fields) ...
    inside = ext(PYDANTIC_V2, "langchain_core.messages.ai", "AIMessage", {"content": "x"}, "m")
    for value in ({"state": [lc]}, [inside, {"additional": lc}]):
        with pytest.raises(UnsafePayloadError, match="a LangChain 'lc' constructor") as info:
            lg_conv.from_payload(payload(value))
        assert info.value.name in ("PromptTemplate", "system")
    # ... and in the JSON form of LangGraph's serializer (its reviver instantiates)
    with pytest.raises(UnsafePayloadError, match="'lc' constructor"):
        converter.serde().loads_typed(("json", json.dumps({"v": lc}).encode()))


def test_lc_constructor_of_an_allowed_message_still_decodes():
    lc_message = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "AIMessage"],
        "kwargs": {"content": "hello"},
    }
    # msgpack leaves it a dict, as before
    assert lg_conv.from_payload(payload({"m": lc_message})) == {"m": lc_message}
    revived = converter.serde().loads_typed(("json", json.dumps(lc_message).encode()))
    assert isinstance(revived, AIMessage) and revived.content == "hello"


# ------------------------------------------------------------------ allowed types


def roundtrip(value):
    [p] = conv.to_payloads([value])
    assert p.metadata["encoding"].decode() == ENCODING
    return conv.from_payloads([p])[0]


def test_messages_and_langgraph_types_round_trip():
    messages = [
        HumanMessage(content="hi", id="h"),
        SystemMessage(content="be brief", id="s"),
        AIMessage(
            content="x",
            id="a",
            tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c", "type": "tool_call"}],
            usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        ),
        AIMessageChunk(content="chunk", id="ac"),
        ToolMessage(content="1", tool_call_id="c", id="t"),
        ToolMessageChunk(content="1", tool_call_id="c", id="tc"),
        RemoveMessage(id="h"),
    ]
    back = roundtrip({"messages": messages, "docs": [Document(page_content="p", id="d")]})
    assert back["messages"] == messages
    assert [type(m) for m in back["messages"]] == [type(m) for m in messages]
    assert isinstance(back["docs"][0], Document)

    value = (
        Command(update={"messages": [AIMessage(content="x", id="m")]}, goto=[Send("w", {"t": 1})]),
        Interrupt(value={"question": "Deploy?"}, id="i1"),
        Overwrite(value=[1, 2]),
        {"when": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC), "id": uuid.UUID(int=7)},
    )
    back = roundtrip(value)
    assert isinstance(back[0], Command) and isinstance(back[0].goto[0], Send)
    assert back[0].update["messages"][0] == AIMessage(content="x", id="m")
    assert back[1] == Interrupt(value={"question": "Deploy?"}, id="i1")
    assert isinstance(back[2], Overwrite) and back[2].value == [1, 2]
    assert back[3] == value[3]


def test_wire_dataclasses_round_trip_and_are_allowed_where_they_live():
    for cls in (RunRequest, RunState, NodeActivityInput, NodeActivityOutput):
        assert (cls.__module__, cls.__name__) in allowed_types()
    request = RunRequest(graph="g", input={"messages": [HumanMessage(content="hi", id="h")]})
    assert roundtrip(request) == request
    state = RunState(values={"n": 1}, next=("ask",), interrupts=(Interrupt(value=1, id="i"),))
    back = roundtrip(state)
    assert back.values == {"n": 1} and back.interrupts[0].value == 1
    inp = NodeActivityInput(args=({"n": 1},), kwargs={}, langgraph_config={}, node="model")
    assert roundtrip(inp).node == "model"
    out = NodeActivityOutput(result=[Command(goto="x")], interrupts=[Interrupt(value=2, id="j")])
    back = roundtrip(out)
    assert back.result[0].goto == "x" and back.interrupts[0].value == 2


# --------------------------------------------------------------- user-registered


class Verdict(enum.Enum):
    YES = "yes"


class Plan(pydantic.BaseModel):
    steps: list[str]
    verdict: Verdict = Verdict.YES


@dataclasses.dataclass
class Note:
    text: str
    plan: Plan | None = None


def test_a_user_type_is_refused_until_registered_then_round_trips():
    value = {"note": Note(text="n", plan=Plan(steps=["a", "b"]))}
    [p] = conv.to_payloads([value])
    with pytest.raises(UnsafePayloadError) as info:
        conv.from_payloads([p])
    # every refused type is named, the innermost first
    assert info.value.refused == [f"{__name__}.{n}" for n in ("Verdict", "Plan", "Note")]
    assert f"refusing to decode {__name__}.Verdict (and {__name__}.Plan" in info.value.message

    allow_types(Note, (__name__, "Plan"), f"{__name__}:Verdict")
    back = conv.from_payloads([p])[0]
    assert back == value and isinstance(back["note"].plan.verdict, Verdict)
    assert {(__name__, n) for n in ("Note", "Plan", "Verdict")} <= allowed_types()
    allow_types(Note)  # idempotent


def test_allow_types_from_spec_and_bad_specs():
    allow_types_from_spec(f" {__name__}:Note,{__name__}:Plan  {__name__}:Verdict ")
    allow_types_from_spec(None)
    assert roundtrip(Note(text="x", plan=Plan(steps=[]))) == Note(text="x", plan=Plan(steps=[]))
    for bad in ("no_colon", "mod:", ":Name", "mod:a.b", ("only-one",), 3, ("m", "")):
        with pytest.raises(TypeError, match="allow_types"):
            allow_types(bad)


def test_registering_does_not_open_anything_else(marker):
    allow_types(Note)
    with pytest.raises(UnsafePayloadError, match="os.system"):
        lg_conv.from_payload(payload([ext(SINGLE_ARG, "os", "system", f"touch {marker}")]))
    assert not marker.exists()


def test_types_named_in_the_environment_are_allowed(monkeypatch):
    from deepagent_temporal import converter
    from deepagent_temporal.contract import WorkerEnv

    monkeypatch.setenv(WorkerEnv.name("allowed_types"), "pkg.models:Report, pkg.models:Grade")
    converter._env_types.cache_clear()
    try:
        assert {("pkg.models", "Report"), ("pkg.models", "Grade")} <= converter.allowed_types()
    finally:
        monkeypatch.delenv(WorkerEnv.name("allowed_types"))
        converter._env_types.cache_clear()


class Mood(enum.Enum):
    CALM = "calm"


class Finding(BaseModel):
    mood: Mood
    text: str


class ResearchState(TypedDict, total=False):
    findings: Annotated[list[Finding], operator.add]


def test_a_graphs_own_state_types_are_allowed():
    from langgraph.graph import END, START, StateGraph

    from deepagent_temporal import converter

    g = StateGraph(ResearchState)
    g.add_node("n", lambda s: {})
    g.add_edge(START, "n")
    g.add_edge("n", END)
    converter.allow_graph_types(g.compile())
    allowed = converter.allowed_types()
    assert (__name__, "Finding") in allowed and (__name__, "Mood") in allowed
