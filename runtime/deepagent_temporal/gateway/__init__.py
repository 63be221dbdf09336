"""``deepagent-temporal serve``: an HTTP/SSE gateway speaking the LangGraph Agent Server
protocol, so the LangGraph SDKs (Python, JS, React ``useStream``), agent-chat-ui and
LangGraph Studio talk to DeepAgents running on Temporal. See ``docs/gateway.md``.

Modules: ``app`` (routes, auth), ``server`` (uvicorn, the CLI's entry), ``threads`` and
``runs`` (threads and runs on Temporal), ``stream`` (a run's SSE events from the
workflow stream and Redis), ``cursor`` (event ids that are resume cursors), ``sse``
(framing), ``graphs`` (assistants).
"""
