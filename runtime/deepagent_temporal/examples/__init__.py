"""Example graphs, importable by a worker (``DEEPAGENT_GRAPH=deepagent_temporal.examples.<module>:<attr>``).

- ``research_agent:agent`` - a Deep Agent (``create_deep_agent``) with a search tool; it
  uses the offline scripted model unless ANTHROPIC_API_KEY / OPENAI_API_KEY is set.
- ``shapes`` - small graphs of every shape the runtime supports (sync/async nodes,
  ``Send`` fan-out, ``Command``, subgraphs, interrupts, failures), used by the tests.
"""
