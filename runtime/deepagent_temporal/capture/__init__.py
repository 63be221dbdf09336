"""Capture: LangChain streaming callbacks -> token events, routed per LLM call."""

from deepagent_temporal.capture.handler import TokenCapturingHandler

__all__ = ["TokenCapturingHandler"]
