"""A Deep Agent that answers research questions with a (fake, offline) search tool.

``DEEPAGENT_GRAPH=deepagent_temporal.examples.research_agent:agent``

The model is the offline :class:`~deepagent_temporal.dev.scripted.ScriptedChatModel` (one tool
call, then an answer) unless ``ANTHROPIC_API_KEY`` or ``OPENAI_API_KEY`` is set and the
matching LangChain integration is installed, in which case a real model is used
(``DEEPAGENT_MODEL`` overrides the model name).
"""

from __future__ import annotations

import os
from typing import Any

from deepagents import create_deep_agent

from deepagent_temporal.dev.scripted import ScriptedChatModel

SYSTEM_PROMPT = (
    "You are a careful research assistant. Use the search tool once, then answer in a "
    "short paragraph."
)

SCRIPT: list[Any] = [
    {
        "content": "Let me search for background on durable execution first.",
        "tool_calls": [
            {
                "name": "search",
                "args": {"query": "durable execution LLM agents"},
                "id": "call_search_1",
            }
        ],
    },
    (
        "Durable execution means every step of the agent is recorded by Temporal, so a "
        "crash or a restart resumes the run where it stopped instead of starting over. "
        "Each graph node runs as an activity with retries and timeouts, while the tokens "
        "of every model call stream to the client in real time through Redis, or through "
        "Temporal itself when Redis is unavailable."
    ),
]

_CORPUS = {
    "durable": "Temporal records each step of a workflow in its event history and replays it after failures.",
    "stream": "Redis Streams deliver appended entries to blocking readers within a millisecond.",
}


def search(query: str) -> str:
    """Search a small offline knowledge base and return the matching notes."""
    q = query.lower()
    hits = [text for key, text in _CORPUS.items() if key in q]
    return "\n".join(hits) or "No results."


def make_model(token_delay: float | None = None) -> Any:
    """A real chat model when a provider key is set, else the offline scripted model."""
    name = os.environ.get("DEEPAGENT_MODEL")
    try:
        if os.environ.get("ANTHROPIC_API_KEY"):
            from langchain_anthropic import ChatAnthropic

            return ChatAnthropic(model=name or "claude-3-5-haiku-latest", streaming=True)
        if os.environ.get("OPENAI_API_KEY"):
            from langchain_openai import ChatOpenAI  # type: ignore[import-not-found]

            return ChatOpenAI(model=name or "gpt-4o-mini", streaming=True)
    except ImportError:
        pass
    delay = (
        float(os.environ.get("DEEPAGENT_SCRIPTED_TOKEN_DELAY", "0.02"))
        if token_delay is None
        else token_delay
    )
    return ScriptedChatModel(script=SCRIPT, token_delay=delay)


def make_agent() -> Any:
    return create_deep_agent(model=make_model(), tools=[search], system_prompt=SYSTEM_PROMPT)


agent = make_agent()
