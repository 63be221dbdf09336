"""Durable LangGraph / Deep Agents runs on Temporal with real-time token streaming."""
