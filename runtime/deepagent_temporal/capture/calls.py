"""Per-LLM-call state of the capture handler, and what it keeps of a call in history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deepagent_temporal.contract import REDIS, TEMPORAL


def graph_namespace(metadata: dict[str, Any] | None) -> tuple[str, ...] | None:
    """Subgraph path of the task that made an LLM call (LangGraph's own convention)."""
    if not metadata or "langgraph_checkpoint_ns" not in metadata:
        return None
    try:
        from langgraph.pregel._messages import graph_namespace as _langgraph_namespace

        return tuple(_langgraph_namespace(metadata))
    except Exception:  # pragma: no cover - defensive against langgraph changes
        ns = str(metadata["langgraph_checkpoint_ns"]).split("|")
        return tuple(ns[:-1])


@dataclass(eq=False)
class LLMCall:
    """One LLM call inside one handler: where its events go and how far they got.

    ``route`` is decided at the call's start (Redis if the circuit is closed) and moves
    to the Temporal path for good if Redis fails mid-call (``failed_over``).
    """

    llm_call: int
    node: str | None
    namespace: list[str]
    route: str = TEMPORAL
    nostream: bool = False
    index: int = 0  # tokens emitted so far: the next token's index
    message_id: str | None = None
    pending: int = 0  # events handed to the Redis writer and not yet settled
    used_redis: bool = False  # some of its events went to Redis (which may lose them)
    failed_over: bool = False
    ended: bool = False
    error: str | None = None
    #: the writer's ``on_settled`` for this call's events (one object per call, so the
    #: writer settles a call's consecutive events with one callback)
    on_settled: Callable[[int, bool], None] | None = None
    #: the call's text so far; kept for the durable record only when Redis carried the
    #: call (the Temporal path is durable by itself)
    text: list[str] = field(default_factory=list)

    @property
    def transport(self) -> str:
        """The path that carried the call (a call that failed over counts as Temporal)."""
        return TEMPORAL if (self.route == TEMPORAL or self.failed_over) else REDIS

    def summary(self, attempt: int) -> dict[str, Any]:
        """What Event History keeps of the call: about 150 bytes, plus its text when Redis
        carried it (the activity drops the text again when its result holds the message)."""
        summary: dict[str, Any] = {
            "token_count": self.index,
            "llm_call": self.llm_call,
            "message_id": self.message_id,
            "transport": self.transport,
            "node": self.node,
            "attempt": attempt,
        }
        if self.failed_over:
            summary["failover"] = True
        if self.namespace:
            summary["namespace"] = self.namespace
        if self.error:
            summary["error"] = self.error[:200]
        if self.used_redis:
            summary["text"] = "".join(self.text)
        return summary


__all__ = ["LLMCall", "graph_namespace"]
