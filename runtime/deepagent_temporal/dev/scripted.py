"""A scripted chat model for tests, demos and benchmarks.

``ScriptedChatModel`` is a real ``BaseChatModel``: it implements ``_stream`` / ``_astream``
(so tokens flow through LangChain's own callback path, ``on_llm_new_token``, exactly like a
provider's model) and ``_generate`` (the non-streaming path), and supports tool calls
(streamed as ``tool_call_chunks``; ``bind_tools`` is accepted). It needs no network.

Which reply it gives:

- ``mode="turn"`` (default): reply ``k`` where ``k`` is the number of AI messages already in
  the prompt. Deterministic across processes and activity retries: a worker in another
  process, or a retried attempt, gives the same reply for the same conversation.
- ``mode="sequential"``: replies in order, one per call, per model instance (per process).
- ``responder=fn(messages) -> AIMessage | str | dict``: full control.

Past the end of the script, the last reply repeats.

Script entries: ``"text"``, ``AIMessage(...)``, or ``{"content": "...", "tool_calls":
[{"name": ..., "args": {...}, "id": ...}]}``.

Failure injection (for retry tests): ``fail_after_tokens=N`` raises ``ScriptedModelError``
after streaming N tokens, when running inside a Temporal activity whose attempt is in
``fail_attempts`` (default: the first attempt); outside an activity, the first
``len(fail_attempts)`` streamed calls of the instance fail.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr


class ScriptedModelError(RuntimeError):
    """Raised by ScriptedChatModel's failure injection."""


def split_tokens(text: str, split: str | int = "words") -> list[str]:
    """Split text into stream tokens whose concatenation is the text."""
    if not text:
        return []
    if split == "chars":
        return list(text)
    if isinstance(split, int):
        return [text[i : i + split] for i in range(0, len(text), split)]
    return re.findall(r"\s*\S+|\s+", text)


def _to_message(reply: Any) -> AIMessage:
    if isinstance(reply, AIMessage):
        return reply
    if isinstance(reply, str):
        return AIMessage(content=reply)
    if isinstance(reply, dict):
        calls = []
        for i, tc in enumerate(reply.get("tool_calls") or []):
            calls.append(
                {
                    "name": tc["name"],
                    "args": dict(tc.get("args") or {}),
                    "id": tc.get("id") or f"call_{i}_{uuid.uuid4().hex[:8]}",
                    "type": "tool_call",
                }
            )
        return AIMessage(content=reply.get("content", ""), tool_calls=calls, id=reply.get("id"))
    raise TypeError(f"unsupported scripted reply: {reply!r}")


class ScriptedChatModel(BaseChatModel):
    """Deterministic streaming chat model with tool calls (see module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: list[Any] = Field(default_factory=lambda: ["Hello from the scripted model."])
    mode: Literal["turn", "sequential"] = "turn"
    responder: Callable[[list[BaseMessage]], Any] | None = Field(default=None, exclude=True)
    split: str | int = "words"
    token_delay: float = 0.0
    """Seconds of sleep between tokens (on top of the per-token processing time)."""
    tokens_per_second: float | None = None
    """Pace tokens on an absolute schedule (token n at start + n/rate), like a provider's
    steady output rate; overrides ``token_delay`` on the async path."""
    args_chunk_size: int = 8
    """Characters of tool-call JSON arguments per streamed chunk."""
    fail_after_tokens: int | None = None
    fail_attempts: Sequence[int] = (1,)
    on_token: Callable[[str, float], None] | None = Field(default=None, exclude=True)
    """Called with (token, time.time()) right before each chunk is yielded (benchmarks)."""

    _calls: int = PrivateAttr(default=0)
    _failures: int = PrivateAttr(default=0)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    # -- reply selection -----------------------------------------------------------------

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        if self.responder is not None:
            return _to_message(self.responder(messages))
        with self._lock:
            n = self._calls
            self._calls += 1
        if self.mode == "turn":
            n = sum(1 for m in messages if isinstance(m, AIMessage))
        if not self.script:
            return AIMessage(content="")
        return _to_message(self.script[min(n, len(self.script) - 1)])

    def _should_fail(self) -> bool:
        if self.fail_after_tokens is None:
            return False
        try:
            from temporalio import activity

            if activity.in_activity():
                return activity.info().attempt in tuple(self.fail_attempts)
        except Exception:  # noqa: BLE001 - temporalio absent or no activity context
            pass
        with self._lock:
            if self._failures < len(tuple(self.fail_attempts)):
                self._failures += 1
                return True
        return False

    # -- chunks --------------------------------------------------------------------------

    def _chunks(self, message: AIMessage) -> list[AIMessageChunk]:
        content = message.content if isinstance(message.content, str) else ""
        chunks = [
            AIMessageChunk(content=t, id=message.id) for t in split_tokens(content, self.split)
        ]
        import json

        for i, tc in enumerate(message.tool_calls):
            args = json.dumps(tc["args"])
            pieces = [
                args[j : j + self.args_chunk_size]
                for j in range(0, len(args), self.args_chunk_size)
            ] or [""]
            for k, piece in enumerate(pieces):
                chunks.append(
                    AIMessageChunk(
                        content="",
                        id=message.id,
                        tool_call_chunks=[
                            {
                                "name": tc["name"] if k == 0 else None,
                                "args": piece,
                                "id": tc["id"] if k == 0 else None,
                                "index": i,
                                "type": "tool_call_chunk",
                            }
                        ],
                    )
                )
        if chunks:
            chunks[-1].chunk_position = "last"
        return chunks

    # -- BaseChatModel -------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._reply(messages)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        fail = self._should_fail()
        start = time.monotonic()
        rate = self.tokens_per_second
        for n, chunk in enumerate(self._chunks(self._reply(messages))):
            if fail and n >= (self.fail_after_tokens or 0):
                raise ScriptedModelError(f"scripted failure after {n} tokens")
            if rate:
                time.sleep(max(0.0, start + n / rate - time.monotonic()))
            elif self.token_delay and n:
                time.sleep(self.token_delay)
            if self.on_token is not None:
                self.on_token(chunk.content if isinstance(chunk.content, str) else "", time.time())
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        fail = self._should_fail()
        start = time.monotonic()
        rate = self.tokens_per_second
        for n, chunk in enumerate(self._chunks(self._reply(messages))):
            if fail and n >= (self.fail_after_tokens or 0):
                raise ScriptedModelError(f"scripted failure after {n} tokens")
            # like a provider's model, which awaits the network between chunks
            if rate:
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            else:
                await asyncio.sleep(self.token_delay if (self.token_delay and n) else 0)
            if self.on_token is not None:
                self.on_token(chunk.content if isinstance(chunk.content, str) else "", time.time())
            yield ChatGenerationChunk(message=chunk)


__all__ = ["ScriptedChatModel", "ScriptedModelError", "split_tokens"]
