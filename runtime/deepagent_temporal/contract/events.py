"""Token events and their wire codec, stream names, run markers, the workflow interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

try:  # orjson ships with the runtime (a langgraph dependency); json is the fallback
    import orjson

    def dumps(obj: Any) -> bytes:
        """Encode an event (or a list of events) as compact JSON bytes."""
        return orjson.dumps(obj, default=str)

    loads = orjson.loads
except ImportError:  # pragma: no cover - the operator image has no orjson
    import json

    def dumps(obj: Any) -> bytes:
        """Encode an event (or a list of events) as compact JSON bytes."""
        return json.dumps(obj, separators=(",", ":"), default=str).encode()

    loads = json.loads


# ------------------------------------------------------------------------------------
# Token events
# ------------------------------------------------------------------------------------

#: The two paths a token can take. One word each, in code, docs, metrics and events.
REDIS = "redis"
TEMPORAL = "temporal"
Transport = Literal["redis", "temporal"]

EventType = Literal["token", "llm_start", "llm_end", "reset", "snapshot", "complete"]


class TokenEvent(TypedDict, total=False):
    """One streamed event: a plain dict on the wire (JSON in Redis, msgpack in Temporal).

    Identity of an LLM call: ``(task_id or node, attempt, llm_call)``; of a token: that
    plus ``index`` (0, 1, 2, ... within the call). ``seq`` is assigned by each client's
    merger in delivery order; it is not a resume cursor (``redis_id`` is, on the Redis path).
    """

    type: EventType
    token: str
    seq: int
    node: str | None
    namespace: list[str]
    task_id: str | None
    llm_call: int
    index: int
    attempt: int
    next_attempt: int
    message_id: str | None
    source: Transport
    tool_call_chunks: list[dict[str, Any]]
    #: ``"last"`` on the call's last chunk when the model marked it (LangChain's
    #: ``AIMessageChunk.chunk_position``)
    chunk_position: str
    token_count: int
    ts: float
    error: str
    nostream: bool
    #: which part of the run: 0 until the first resume, +1 at every resume
    segment: int
    #: on ``llm_start``: the workflow stream's length when the node was scheduled (the
    #: graph events before the call in LangGraph's order are below it)
    stream_offset: int
    #: on ``snapshot``: the call's text was recovered from the durable record
    snapshot: bool
    #: set by a reader: the Redis entry id (resume cursor); stripped before delivery
    redis_id: str
    #: set on events re-sent through Temporal after Redis failed; stripped before delivery
    replay: bool


#: keys a reader adds for delivery bookkeeping; the client merger strips them
INTERNAL_EVENT_KEYS = ("redis_id", "replay")

#: Redis stream entry fields: one event, or a JSON list of events queued together
ENTRY_EVENT = b"e"
ENTRY_BATCH = b"b"

#: default prefix of the per-run Redis stream key ``<prefix>:<workflow id>:<run id>``
STREAM_KEY_PREFIX = "deepagent:stream"


def stream_key(workflow_id: str, run_id: str, prefix: str = STREAM_KEY_PREFIX) -> str:
    """The Redis stream that carries one workflow run's tokens."""
    return f"{prefix}:{workflow_id}:{run_id}"


def encode_entry(events: list[bytes]) -> tuple[bytes, bytes]:
    """Fields of one stream entry for already-encoded events."""
    if len(events) == 1:
        return ENTRY_EVENT, events[0]
    return ENTRY_BATCH, b"[" + b",".join(events) + b"]"


def decode_entry(fields: list[bytes]) -> list[dict[str, Any]]:
    """Events of one stream entry (``[name, value, ...]`` as XREAD returns it)."""
    for i in range(0, len(fields) - 1, 2):
        name, value = fields[i], fields[i + 1]
        if name == ENTRY_EVENT:
            return [loads(value)]
        if name == ENTRY_BATCH:
            return list(loads(value))
    return []


def content_text(content: Any) -> str:
    """The text of a message's content (a string, or a list of content blocks): what the
    ``token`` deltas of a call concatenate to."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text") or "")
        return "".join(parts)
    return ""


def complete_event(ts: float, **extra: Any) -> dict[str, Any]:
    """The last entry of a run segment's Redis stream: every Redis-carried token of the
    segment came before it (``segment`` says which; a pause also ends a segment)."""
    return {"type": "complete", "token": "", "ts": ts, **extra}


#: The durable record of one LLM call, published by the workflow on TOKENS_TOPIC when
#: the node activity that made the call completes (built from the activity result, so
#: it survives any Redis loss): ``{"type": LLM_RECORD, "task_id", "attempt", "llm_call",
#: "message_id", "node", "namespace", "token_count", "transport", "text", "segment"}``.
#: A client whose copy of the call is incomplete delivers the rest as a ``snapshot``.
LLM_RECORD = "llm_record"


# ------------------------------------------------------------------------------------
# The workflow's interface (what a client calls, what the workflow publishes)
# ------------------------------------------------------------------------------------

WORKFLOW_NAME = "DeepAgentGraphRun"
GET_STATE_QUERY = "get_state"
PAUSE_COUNT_QUERY = "pause_count"
RESUME_SIGNAL = "resume"
WAIT_UPDATE = "wait"
#: the activity that writes a run's Redis ``complete`` entry at its end
FINISH_STREAM_ACTIVITY = "deepagent.finish_stream"

#: workflow-stream topics: token batches of the Temporal path, ``get_stream_writer``
#: output, ``values`` / ``updates`` chunks, run lifecycle markers
TOKENS_TOPIC = "tokens"
CUSTOM_TOPIC = "custom"
GRAPH_TOPIC = "graph"
RUN_TOPIC = "run"

#: run markers on RUN_TOPIC: ``{"kind": <marker>, "data": ..., ...}``
RUN_PAUSE = "pause"  # an interrupt: data = the interrupts; the run waits for RESUME_SIGNAL
RUN_RESUMED = "resumed"
RUN_ERROR = "error"  # data = the failure message
RUN_END = "end"  # ``redis_complete``: True if the Redis ``complete`` entry was written
RUN_ENDING_MARKERS = (RUN_END, RUN_PAUSE, RUN_ERROR)


@dataclass
class RunRequest:
    """Workflow input."""

    graph: str | None
    input: Any
    config: dict[str, Any] = field(default_factory=dict)
    stream_modes: list[str] = field(default_factory=lambda: ["values", "updates"])
    #: final values of the thread's previous run: a new run on a thread continues it
    prior_values: Any = None
    #: set when a run continues as new: the LangGraph checkpoint to resume from
    #: (``checkpoint``, ``metadata``, ``pending_writes``), the ``state`` (a RunState)
    #: and the ``pause_count`` of the run so far
    continuation: dict[str, Any] | None = None
    #: a thread's state update (``threads.update_state``): ``{"values", "as_node"}``,
    #: applied to ``prior_values`` through the graph's reducers; the run runs no node
    update: dict[str, Any] | None = None


@dataclass
class RunState:
    """What the ``get_state`` query and the ``wait`` update return."""

    values: Any = None
    next: tuple[str, ...] = ()
    interrupts: tuple[Any, ...] = ()
    status: str = "running"  # running | interrupted | completed | failed
    step: int = 0
    error: str | None = None
    #: resumes so far: the run's current segment (events carry it as ``segment``)
    segment: int = 0
    #: workflow-stream offset where the current segment starts (a joiner reads from it)
    segment_offset: int = 0
    #: the run id that names the run's Redis stream: the first run of its
    #: continue-as-new chain, so the stream follows the chain
    stream_run_id: str | None = None
    #: continue-as-new boundaries crossed so far
    continuations: int = 0
