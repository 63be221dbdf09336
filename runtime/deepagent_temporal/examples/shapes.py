"""Small graphs of every shape the runtime supports; the integration tests run them.

Each attribute is a compiled graph a worker can load, e.g.
``DEEPAGENT_GRAPH=deepagent_temporal.examples.shapes:deep_agent``.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, TypedDict

from deepagents import create_deep_agent
from langchain.agents import create_agent
from langchain.agents.middleware import SummarizationMiddleware
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, Send, interrupt

from deepagent_temporal.dev.scripted import ScriptedChatModel

# --------------------------------------------------------------------- deep agents


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


DEEP_SCRIPT: list[Any] = [
    {
        "content": "I will add the numbers with the tool.",
        "tool_calls": [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_add_1"}],
    },
    "The sum of 2 and 3 is 5, computed by the add tool.",
]

#: one tool call, two model calls
deep_agent = create_deep_agent(
    model=ScriptedChatModel(script=DEEP_SCRIPT, token_delay=0.003), tools=[add]
)

LONG_TEXT = " ".join(f"word{i}" for i in range(400)) + "."

#: a long answer streamed slowly (for killing Redis mid-stream)
long_agent = create_deep_agent(
    model=ScriptedChatModel(
        script=[
            {
                "content": "Adding first.",
                "tool_calls": [{"name": "add", "args": {"a": 1, "b": 1}, "id": "call_add_2"}],
            },
            LONG_TEXT,
        ],
        token_delay=0.004,
    ),
    tools=[add],
)

#: the first attempt of every model activity fails after streaming 4 tokens
flaky_agent = create_deep_agent(
    model=ScriptedChatModel(
        script=["This answer survives a failed first attempt of the activity."],
        token_delay=0.002,
        fail_after_tokens=4,
        fail_attempts=(1,),
    ),
    tools=[add],
)

# ------------------------------------------------------------------ Send fan-out


class FanState(TypedDict):
    topics: list[str]
    messages: Annotated[list, operator.add]


_writer_model = ScriptedChatModel(
    responder=lambda msgs: (
        f"Notes about {msgs[-1].content}: " + " ".join(f"{msgs[-1].content}-{i}" for i in range(40))
    ),
    token_delay=0.004,
)


def plan(state: FanState) -> dict:
    return {}


def fan_out(state: FanState) -> list[Send]:
    return [Send("write", {"topic": t}) for t in state["topics"]]


async def write(state: dict) -> dict:
    reply = await _writer_model.ainvoke([HumanMessage(content=state["topic"])])
    return {"messages": [reply]}


def _fanout_graph() -> Any:
    g = StateGraph(FanState)
    g.add_node("plan", plan)
    g.add_node("write", write)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["write"])
    g.add_edge("write", END)
    return g.compile(name="fanout")


fanout = _fanout_graph()

# --------------------------------------------------- sync/async, Command, subgraph


class ShapeState(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]
    n: int


def _sub_graph() -> Any:
    def inner(state: ShapeState) -> dict:
        return {"trail": ["sub.inner"], "n": state.get("n", 0) + 10}

    g = StateGraph(ShapeState)
    g.add_node("inner", inner)
    g.add_edge(START, "inner")
    g.add_edge("inner", END)
    return g.compile(name="sub")


def _shapes_graph() -> Any:
    def sync_node(state: ShapeState) -> dict:  # a closure, sync
        get_stream_writer()({"progress": "sync_node"})
        return {"trail": ["sync"], "n": state.get("n", 0) + 1}

    async def async_node(state: ShapeState) -> Command:
        get_stream_writer()({"progress": "async_node"})
        return Command(update={"trail": ["async"]}, goto="sub")

    def route(state: ShapeState) -> str:
        return "async_node" if state.get("n", 0) >= 1 else END

    g = StateGraph(ShapeState)
    g.add_node("sync_node", sync_node)
    g.add_node("async_node", async_node)
    g.add_node("sub", _sub_graph())
    g.add_node("unreached", lambda s: {"trail": ["unreached"]})
    g.add_edge(START, "sync_node")
    g.add_conditional_edges("sync_node", route, ["async_node", END])
    g.add_edge("sub", END)
    return g.compile(name="shapes")


shapes = _shapes_graph()

# -------------------------------------------------------------------- interrupts


class ApprovalState(MessagesState):
    decision: str


def _approval_graph() -> Any:
    def propose(state: ApprovalState) -> dict:
        return {"messages": [AIMessage(content="I propose to deploy.")]}

    def ask(state: ApprovalState) -> dict:
        answer = interrupt({"question": "Deploy?"})
        return {"decision": str(answer)}

    def finish(state: ApprovalState) -> dict:
        return {"messages": [AIMessage(content=f"Decision: {state['decision']}")]}

    g = StateGraph(ApprovalState)
    g.add_node("propose", propose)
    g.add_node("ask", ask)
    g.add_node("finish", finish)
    g.add_edge(START, "propose")
    g.add_edge("propose", "ask")
    g.add_edge("ask", "finish")
    g.add_edge("finish", END)
    return g.compile(name="approval")


approval = _approval_graph()

#: a model call, an interrupt, then another model call (human in the loop with tokens)
_chat_model = ScriptedChatModel(
    script=[
        "Plan: build the image, run the tests, then roll out to one zone at a time.",
        "Rolling out now, zone by zone, as you approved.",
    ],
    token_delay=0.002,
)


def _chat_approval_graph() -> Any:
    async def draft(state: MessagesState) -> dict:
        return {"messages": [await _chat_model.ainvoke(state["messages"])]}

    def ask(state: MessagesState) -> dict:
        answer = interrupt({"question": "Go ahead?"})
        return {"messages": [HumanMessage(content=str(answer))]}

    async def act(state: MessagesState) -> dict:
        return {"messages": [await _chat_model.ainvoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("draft", draft)
    g.add_node("ask", ask)
    g.add_node("act", act)
    g.add_edge(START, "draft")
    g.add_edge("draft", "ask")
    g.add_edge("ask", "act")
    g.add_edge("act", END)
    return g.compile(name="chat_approval")


chat_approval = _chat_approval_graph()


# ------------------------------------------------------------------ fault matrix


def _matrix_reply(messages: list[Any]) -> str:
    prompt = str(messages[-1].content) if messages else ""
    return f"On {prompt}: " + " ".join(f"w{i}" for i in range(40)) + "."


_matrix_model = ScriptedChatModel(responder=_matrix_reply, token_delay=0.004)


class MatrixState(TypedDict, total=False):
    topics: list[str]
    messages: Annotated[list, add_messages]


def _fault_matrix_graph() -> Any:
    """A Send fan-out of model calls, a node with two model calls, an interrupt, a final
    call: every shape the delivery guarantees must hold across."""

    def plan(state: MatrixState) -> dict:
        return {}

    def fan_out(state: MatrixState) -> list[Send]:
        return [Send("write", {"topics": [t]}) for t in state.get("topics") or ["a", "b"]]

    async def write(state: MatrixState) -> dict:
        topic = state["topics"][0]
        return {"messages": [await _matrix_model.ainvoke([HumanMessage(content=topic)])]}

    async def review(state: MatrixState) -> dict:
        first = await _matrix_model.ainvoke([HumanMessage(content="review one")])
        second = await _matrix_model.ainvoke([HumanMessage(content="review two")])
        return {"messages": [first, second]}

    def approve(state: MatrixState) -> dict:
        return {"messages": [HumanMessage(content=str(interrupt({"question": "Ship?"})))]}

    async def final(state: MatrixState) -> dict:
        return {"messages": [await _matrix_model.ainvoke([HumanMessage(content="final")])]}

    g = StateGraph(MatrixState)
    for name, fn in (("plan", plan), ("write", write), ("review", review)):
        g.add_node(name, fn)
    g.add_node("approve", approve)
    g.add_node("final", final)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["write"])
    g.add_edge("write", "review")
    g.add_edge("review", "approve")
    g.add_edge("approve", "final")
    g.add_edge("final", END)
    return g.compile(name="fault_matrix")


fault_matrix = _fault_matrix_graph()


# ----------------------------------------------------------------------- long runs


_loop_model = ScriptedChatModel(
    responder=lambda messages: f"Thinking about {messages[-1].content}, then the tool.",
)


class LoopState(TypedDict, total=False):
    steps: int
    limit: int
    note_bytes: int
    pause_at: int
    #: "text": notes of pseudo-random words (compress about 3x, like real tool output);
    #: otherwise "nnn..." (compresses to nothing)
    note_kind: str
    #: a file each node execution appends "<node> <step>" to (counts re-executions)
    exec_log: str
    #: seconds the tool takes (a worker can be killed mid-node)
    tool_seconds: float
    notes: Annotated[list[str], operator.add]
    messages: Annotated[list, add_messages]


def _vocabulary() -> list[str]:
    import random

    rnd = random.Random(7)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    return ["".join(rnd.choices(letters, weights, k=rnd.randint(2, 9))) for _ in range(3000)]


_WORDS = _vocabulary()
_ZIPF = [1 / rank for rank in range(1, len(_WORDS) + 1)]  # word frequencies as in prose


def loop_note(step: int, size: int, kind: str | None = None) -> str:
    """The ``tool`` node's note of step ``step`` (``size`` characters)."""
    if kind != "text":
        return "n" * size
    import random

    rnd = random.Random(step)
    words = rnd.choices(_WORDS, _ZIPF, k=size // 4 + 8)
    return " ".join(words)[:size].ljust(size)


def _log_execution(state: LoopState, node: str, step: int) -> None:
    if state.get("exec_log"):
        with open(state["exec_log"], "a") as log:
            log.write(f"{node} {step}\n")


def _long_loop_graph() -> Any:
    """``think`` (a short streamed model reply) and ``tool`` (a note of ``note_bytes``,
    like a file-reading agent's tool output) in a loop of ``limit`` steps; optionally an
    interrupt at step ``pause_at``."""

    async def think(state: LoopState) -> dict:
        _log_execution(state, "think", state.get("steps", 0) + 1)
        prompt = HumanMessage(content=f"step {state.get('steps', 0) + 1}")
        return {"messages": [await _loop_model.ainvoke([prompt])]}

    def tool(state: LoopState) -> dict:
        step = state.get("steps", 0) + 1
        if state.get("pause_at") == step:
            interrupt({"question": f"continue after step {step}?"})
        _log_execution(state, "tool", step)
        if state.get("tool_seconds"):
            time.sleep(state["tool_seconds"])
        note = loop_note(step, state.get("note_bytes", 4096), state.get("note_kind"))
        return {"steps": step, "notes": [note]}

    def more(state: LoopState) -> str:
        return "think" if state.get("steps", 0) < state.get("limit", 10) else END

    g = StateGraph(LoopState)
    g.add_node("think", think)
    g.add_node("tool", tool)
    g.add_edge(START, "think")
    g.add_edge("think", "tool")
    g.add_conditional_edges("tool", more, ["think", END])
    return g.compile(name="long_loop")


long_loop = _long_loop_graph()

# ---------------------------------------------------------------------- failures


class BoomError(RuntimeError):
    pass


def _failing_graph() -> Any:
    async def boom(state: MessagesState) -> dict:
        raise BoomError("this node always fails")

    g = StateGraph(MessagesState)
    g.add_node("boom", boom)
    g.add_edge(START, "boom")
    g.add_edge("boom", END)
    return g.compile(name="failing")


failing = _failing_graph()

# ---------------------------------------------------------------- nested sub-agent

#: the main agent delegates to a sub-agent (``task`` tool); both stream tokens
subagent_agent = create_deep_agent(
    model=ScriptedChatModel(
        script=[
            {
                "content": "Delegating to the researcher.",
                "tool_calls": [
                    {
                        "name": "task",
                        "args": {
                            "description": "Find the sum of 2 and 3.",
                            "subagent_type": "researcher",
                        },
                        "id": "call_task_1",
                    }
                ],
            },
            "The researcher reports that the sum is 5.",
        ],
        token_delay=0.002,
    ),
    tools=[add],
    subagents=[
        {
            "name": "researcher",
            "description": "Researches a question and reports back.",
            "system_prompt": "You research questions.",
            "model": ScriptedChatModel(
                script=["Research finding: 2 plus 3 equals 5."], token_delay=0.002
            ),
        }
    ],
)

# ------------------------------------------------ create_agent + summarization

#: LangChain's ``create_agent`` with SummarizationMiddleware: one more (tagged
#: ``nostream``) LLM call in its own node once the conversation is long enough
summarizing_agent = create_agent(
    model=ScriptedChatModel(script=DEEP_SCRIPT, token_delay=0.002),
    tools=[add],
    middleware=[
        SummarizationMiddleware(
            model=ScriptedChatModel(script=["Summary: the user asked for 2+3."]),
            trigger=("messages", 3),
            keep=("messages", 2),
        )
    ],
)
