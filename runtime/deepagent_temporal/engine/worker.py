"""Worker construction: graphs registered with the LangGraph plugin, nodes as activities.

The official ``temporalio.langgraph.LangGraphPlugin`` runs LangGraph's loop in the
workflow and each node as an activity. Our :class:`DeepAgentPlugin` builds on it and
closes the gaps seen with Deep Agents graphs:

* nodes need no ``execute_in`` label: every node of a copy of the graph's builder is
  labelled ``activity`` (the user's graph is not modified);
* closures are fine: activities are named ``<graph>.<node>`` instead of by the
  function's qualified name;
* node state and results (LangChain messages, ``Command`` or a list of them, ``Send``)
  round-trip through :mod:`deepagent_temporal.converter`;
* subgraph nodes (a compiled graph used as a node) run as one activity;
* a LangGraph ``RetryPolicy`` on a node becomes the activity's Temporal retry policy.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import importlib
import inspect
import os
import traceback
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from temporalio.common import RetryPolicy
from temporalio.langgraph import LangGraphPlugin
from temporalio.worker import Worker

from deepagent_temporal.contract import WorkerEnv
from deepagent_temporal.engine.activity import (
    TokenStreamingInterceptor,
    make_finish_stream_activity,
    make_node_activity,
    make_node_caller,
)
from deepagent_temporal.engine.workflow import GRAPH_OPTIONS, RUN_LIMITS, DeepAgentWorkflow


def node_activity_options() -> dict[str, Any]:
    """Node activity options; the heartbeat timeout comes from the worker env (read when
    the worker is created, not at import)."""
    return {
        "start_to_close_timeout": timedelta(minutes=10),
        # the worker heartbeats node activities; a crashed worker's attempt is retried
        # elsewhere after this long
        "heartbeat_timeout": timedelta(seconds=WorkerEnv.from_env().heartbeat_timeout_seconds),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(milliseconds=500),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=10),
            maximum_attempts=3,
        ),
    }


class GraphLoadError(RuntimeError):
    """A graph reference does not point at a compiled graph or a factory of one.

    ``str()`` is one line naming the reference and the reason (with the exception and
    where it was raised, when the user's code raised); the exception that caused it, if
    any, is ``__cause__`` (its traceback is the detail, not the message).
    """

    def __init__(self, reference: str, reason: str, *, from_user_code: bool = True) -> None:
        super().__init__(f"graph reference {reference!r}: {reason}")
        self.reference = reference
        self.reason = reason
        #: the user's code raised (the cause's traceback says where); False when the
        #: reference itself is wrong (no such module or attribute, not a graph)
        self.from_user_code = from_user_code


def _raised(exc: BaseException) -> str:
    """``Type: message (file:line)``, one line: what user code raised, and where."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        name = frame.filename
        if name.startswith("<") or f"{os.sep}importlib{os.sep}" in name or name == __file__:
            continue
        where = f" (at {name}:{frame.lineno})"
        break
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def load_graph(reference: str) -> Any:
    """Import ``package.module:attribute`` (a compiled graph or a zero-arg factory).

    Anything that goes wrong (the module raising at import, a missing attribute, a
    factory that raises or returns something else) is a :class:`GraphLoadError`.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise GraphLoadError(
            reference, "must look like 'package.module:attribute'", from_user_code=False
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
            # the module itself (or its package) does not exist: no code of it ran
            raise GraphLoadError(
                reference, f"cannot import module {module_name!r}: {exc}", from_user_code=False
            ) from exc
        raise GraphLoadError(
            reference, f"cannot import module {module_name!r}: it raised {_raised(exc)}"
        ) from exc
    except (Exception, SystemExit) as exc:  # the module raised while being imported
        raise GraphLoadError(
            reference, f"cannot import module {module_name!r}: it raised {_raised(exc)}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise GraphLoadError(
                reference,
                f"module {module_name!r} has no attribute {attr!r}",
                from_user_code=False,
            ) from exc
        except Exception as exc:  # a module-level __getattr__ or a property raising
            raise GraphLoadError(reference, f"reading {attr!r} raised {_raised(exc)}") from exc
    what = f"{attr!r} is"
    if not isinstance(obj, (Pregel, StateGraph)) and callable(obj):
        what = f"factory {attr!r} returned"
        if inspect.iscoroutinefunction(obj):
            raise GraphLoadError(
                reference,
                f"{attr!r} is an async function; a graph factory must be a plain function",
                from_user_code=False,
            )
        try:
            obj = obj()
        except (Exception, SystemExit) as exc:
            raise GraphLoadError(reference, f"factory {attr!r} raised {_raised(exc)}") from exc
    if isinstance(obj, StateGraph):
        try:
            obj = obj.compile()
        except Exception as exc:
            raise GraphLoadError(
                reference, f"compiling the StateGraph raised {_raised(exc)}"
            ) from exc
    if not isinstance(obj, Pregel) or getattr(obj, "builder", None) is None:
        raise GraphLoadError(
            reference,
            f"{what} {_a(type(obj).__name__)}, not a compiled LangGraph graph "
            "(StateGraph.compile() / create_deep_agent(...)) or a zero-arg factory of one",
            from_user_code=False,
        )
    return obj


# ------------------------------------------------------------------ graph cloning


def _accepts_config(fn: Any) -> None:
    # LangGraph passes `config` only to a parameter annotated RunnableConfig (a real
    # class, not the string `from __future__ import annotations` would leave)
    fn.__annotations__ = {"state": Any, "config": RunnableConfig}


def _subgraph_node(subgraph: Any) -> RunnableCallable:
    async def run_subgraph(state, config):  # noqa: ANN001 - see _accepts_config
        return await subgraph.ainvoke(state, config)

    _accepts_config(run_subgraph)
    return RunnableCallable(None, run_subgraph, name=getattr(subgraph, "name", None))


def _runnable_node(runnable: Any) -> RunnableCallable:
    async def run_runnable(state, config):  # noqa: ANN001 - see _accepts_config
        return await runnable.ainvoke(state, config)

    _accepts_config(run_runnable)
    return RunnableCallable(None, run_runnable, name=getattr(runnable, "name", None))


def _is_native_async(fn: Any) -> bool:
    # LangGraph's fallback afunc for sync callables is partial(run_in_executor, ...),
    # which iscoroutinefunction() also accepts
    return (
        fn is not None and not isinstance(fn, functools.partial) and inspect.iscoroutinefunction(fn)
    )


def _inline_async(path: Any) -> Any:
    """Routing functions run in the workflow: a sync one must not go to an executor.

    (LangGraph's async loop runs sync callables with ``run_in_executor``, which the
    deterministic workflow event loop does not provide.)
    """
    if (
        isinstance(path, RunnableCallable)
        and path.func is not None
        and not _is_native_async(path.afunc)
    ):
        func = path.func
        clone = copy.copy(path)
        clone.func_accepts = dict(path.func_accepts)

        async def run_inline(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        clone.afunc = run_inline
        return clone
    return path


def _temporal_retry(policy: Any) -> RetryPolicy | None:
    if policy is None:
        return None
    if isinstance(policy, Sequence) and not hasattr(policy, "max_attempts"):
        policy = policy[0] if policy else None
        if policy is None:
            return None
    return RetryPolicy(
        initial_interval=timedelta(seconds=float(getattr(policy, "initial_interval", 0.5))),
        backoff_coefficient=float(getattr(policy, "backoff_factor", 2.0)),
        maximum_interval=timedelta(seconds=float(getattr(policy, "max_interval", 128.0))),
        maximum_attempts=int(getattr(policy, "max_attempts", 3)),
    )


def prepare_builder(compiled: Any) -> StateGraph:
    """A copy of ``compiled.builder`` with every node labelled to run as an activity."""
    builder: StateGraph = compiled.builder
    clone = copy.copy(builder)
    clone.nodes = {}
    for name, spec in builder.nodes.items():
        runnable = spec.runnable
        if isinstance(runnable, RunnableCallable):
            new_runnable = copy.copy(runnable)
            new_runnable.func_accepts = dict(runnable.func_accepts)
            if new_runnable.func is not None and _is_native_async(new_runnable.afunc):
                # prefer the async implementation (the plugin takes `func` first)
                new_runnable.func = None
            elif new_runnable.func is not None:
                # sync only: LangGraph's afunc is run_in_executor(func); the activity
                # runs `func` on a thread itself
                new_runnable.afunc = None
        elif isinstance(runnable, Pregel):
            new_runnable = _subgraph_node(runnable)
        else:
            new_runnable = _runnable_node(runnable)
        metadata = dict(spec.metadata or {})
        metadata.setdefault("execute_in", "activity")
        retry = _temporal_retry(spec.retry_policy)
        if retry is not None:
            metadata.setdefault("retry_policy", retry)
        clone.nodes[name] = dataclasses.replace(
            spec, runnable=new_runnable, metadata=metadata, retry_policy=None
        )
    branches: Any = collections.defaultdict(dict)
    for source, specs in builder.branches.items():
        for name, spec in specs.items():
            branches[source][name] = spec._replace(path=_inline_async(spec.path))
    clone.branches = branches
    return clone


def _interrupt_nodes(value: Any) -> list[str] | str | None:
    if not value:
        return None
    return value if isinstance(value, str) else list(value)


class DeepAgentPlugin(LangGraphPlugin):
    """LangGraphPlugin for unlabelled graphs; see the module docstring."""

    def __init__(
        self,
        graphs: dict[str, Any],
        default_activity_options: dict[str, Any] | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        builders: dict[str, StateGraph] = {}
        for name, compiled in graphs.items():
            builders[name] = prepare_builder(compiled)
            GRAPH_OPTIONS[name] = {
                "canonical": name,
                "interrupt_before": _interrupt_nodes(
                    getattr(compiled, "interrupt_before_nodes", None)
                ),
                "interrupt_after": _interrupt_nodes(
                    getattr(compiled, "interrupt_after_nodes", None)
                ),
                "name": getattr(compiled, "name", None),
                "config": _serializable_config(getattr(compiled, "config", None)),
            }
        for alias, target in (aliases or {}).items():
            if alias in builders or target not in builders:
                continue
            builders[alias] = builders[target]
            GRAPH_OPTIONS[alias] = GRAPH_OPTIONS[target]
        self._graph_names = list(builders)
        opts = node_activity_options()
        opts.update(default_activity_options or {})
        # aliases share the builder: wrap each distinct builder once
        unique: dict[str, StateGraph] = {}
        seen: set[int] = set()
        for name, b in builders.items():
            if id(b) not in seen:
                seen.add(id(b))
                unique[name] = b
        super().__init__(graphs=unique, default_activity_options=opts)
        # register aliases with the (already wrapped) builders for graph(name) lookups
        self._all_builders = builders
        interceptor = self.interceptors[0] if getattr(self, "interceptors", None) else None
        if interceptor is not None and hasattr(interceptor, "_graphs"):
            interceptor._graphs = builders

    def execute(self, activity_name: str, func: Any, kwargs: dict[str, Any] | None = None) -> Any:
        opts = dict(kwargs or {})
        opts.pop("execute_in", None)
        opts.pop("summary_fn", None)
        opts.pop("summary", None)
        activity_fn = make_node_activity(activity_name, func)
        self.activities.append(activity_fn)
        node = activity_name
        for graph_name in sorted(self._graph_names, key=len, reverse=True):
            if activity_name.startswith(graph_name + "."):
                node = activity_name[len(graph_name) + 1 :]
                break
        return make_node_caller(activity_fn, node, opts)


def _serializable_config(config: Any) -> dict[str, Any]:
    if not config:
        return {}
    out: dict[str, Any] = {}
    for key in ("recursion_limit", "tags", "metadata", "run_name"):
        if key in config:
            out[key] = copy.deepcopy(config[key])
    configurable = {
        k: v
        for k, v in (config.get("configurable") or {}).items()
        if isinstance(v, (str, int, float, bool, type(None)))
    }
    if configurable:
        out["configurable"] = configurable
    return out


def create_worker(
    client: Any,
    graphs: dict[str, Any],
    task_queue: str,
    *,
    enable_token_streaming: bool = True,
    redis_stream_backend: Any = None,
    activity_options: dict[str, Any] | None = None,
    aliases: dict[str, str] | None = None,
    **worker_kwargs: Any,
) -> Worker:
    """A Temporal worker that runs ``graphs`` (name -> compiled graph) with token streaming."""
    from deepagent_temporal.converter import allow_graph_types, with_data_converter

    for graph in graphs.values():
        allow_graph_types(graph)  # the payload allowlist knows the graphs' own state types
    client = with_data_converter(client)
    env = WorkerEnv.from_env()
    RUN_LIMITS.update(
        max_history_bytes=env.history_max_bytes, max_history_events=env.history_max_events
    )
    plugin = DeepAgentPlugin(graphs, default_activity_options=activity_options, aliases=aliases)
    interceptors = list(worker_kwargs.pop("interceptors", []) or [])
    interceptors.append(
        TokenStreamingInterceptor(
            enable_token_streaming=enable_token_streaming,
            redis_stream_backend=redis_stream_backend,
        )
    )
    workflow_runner = worker_kwargs.pop("workflow_runner", None)
    if workflow_runner is None:
        from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

        workflow_runner = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(
                "deepagent_temporal", "deepagents", "langchain", "pydantic", "ormsgpack"
            )
        )
    kwargs: dict[str, Any] = {
        "task_queue": task_queue,
        "workflows": [DeepAgentWorkflow],
        "activities": [make_finish_stream_activity(redis_stream_backend)],
        "plugins": [plugin],
        "interceptors": interceptors,
        "workflow_runner": workflow_runner,
        "max_concurrent_activities": 100,
    }
    kwargs.update(worker_kwargs)
    return Worker(client, **kwargs)


def create_streaming_worker(
    graph: Any,
    client: Any,
    task_queue: str,
    *,
    graph_name: str | None = None,
    redis_stream_backend: Any = None,
    enable_token_streaming: bool = True,
    **kwargs: Any,
) -> Worker:
    """Worker for one graph with token streaming on (the Redis path when a Redis backend is given)."""
    name = graph_name or getattr(graph, "name", None) or "LangGraph"
    aliases = {}
    if getattr(graph, "name", None) and graph.name != name:
        aliases[graph.name] = name
    return create_worker(
        client,
        {name: graph},
        task_queue,
        enable_token_streaming=enable_token_streaming,
        redis_stream_backend=redis_stream_backend,
        aliases=aliases,
        **kwargs,
    )
