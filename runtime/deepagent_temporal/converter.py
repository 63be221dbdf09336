"""Temporal data converter that round-trips LangChain / LangGraph objects, safely.

Temporal's default JSON converter turns an ``AIMessage`` into a plain dict, so a node
running in an activity would receive its state as dicts and the workflow would get
dicts back. This converter encodes any value that contains something JSON cannot carry
faithfully (LangChain messages, pydantic models, ``Send``, ``Command``, ``Interrupt``,
our own dataclasses, tuples, ...) with LangGraph's own checkpoint serializer
(``JsonPlusSerializer``, msgpack, encoding ``binary/langgraph-msgpack``), and leaves
everything else (Temporal's own dataclasses, plain JSON values) to the default
converters.

**Decoding is allowlisted.** A msgpack payload names the ``(module, name)`` of every
object it holds, and whoever may start or signal a workflow in the namespace chooses
those names. Reviving any importable callable would run ``os.system`` in the worker (and
in every client that reads the value), so only these types are revived:

* LangGraph's own safe list (``langgraph.checkpoint.serde._msgpack.SAFE_MSGPACK_TYPES``:
  datetimes, UUID, Decimal, sets, paths, ...), and the LangChain / LangGraph types we
  round-trip (:data:`BUILTIN_TYPES`): the messages and message chunks of
  ``langchain_core.messages``, ``Document``, ``Send``, ``Command``, ``Interrupt``,
  ``Overwrite``; our wire dataclasses (``RunRequest``, ``RunState``,
  ``NodeActivityInput``, ``NodeActivityOutput``). The state of a deep agent (messages,
  todos, files, summarization events, ...) needs nothing more: its other fields are
  TypedDicts, which travel as dicts;
* types the user registers with :func:`allow_types` (pydantic models, dataclasses,
  enums, namedtuples of a custom state schema or of a structured response). Register
  them in the module that defines the graph (the worker imports it before it decodes
  anything) and in the client process::

      from deepagent_temporal.converter import allow_types
      allow_types(MyState, "my_pkg.models:Verdict")

This uses LangGraph's own mechanism (``JsonPlusSerializer(allowed_msgpack_modules=[...])``
checks the name before it imports anything); this module turns LangGraph's silent
fallback into an error. The JSON form of LangGraph's serializer and LangChain ``"lc"``
constructor dicts (``{"lc": 1, "type": "constructor", "id": [...]}``, what
``langchain_core.load.load`` would instantiate) obey the same allowlist.

**On refusal** :class:`UnsafePayloadError` is raised (an ``ApplicationError``, type
``UnsafePayloadError``, non-retryable) naming the type and how to allow it, before
anything of the payload is imported or called. What Temporal then does:

* workflow input (start): the Python SDK fails the *workflow run* (not the task, which
  would be retried forever) with that message; nothing runs;
* a signal (``resume``): the SDK logs ``Failed deserializing signal input ... dropping
  the signal`` with the error and drops it; a paused run stays paused and a valid
  ``resume`` still continues it;
* an activity's input or result: the activity (input) or the workflow (result) fails
  with the message, without retries;
* a client (a workflow result, a query result, a stream item): the call raises it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import functools
import logging
import threading
import typing
import warnings
from collections.abc import Iterable
from typing import Any

import ormsgpack
import temporalio.converter
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from deepagent_temporal import payloads as payload_limits
from deepagent_temporal import storage as payload_storage
from deepagent_temporal.contract import RunRequest, RunState, WorkerEnv

ENCODING = "binary/langgraph-msgpack"

_PRIMITIVES = (str, int, float, bool, type(None), bytes)

_HOW_TO_ALLOW = (
    "register your state types with deepagent_temporal.converter.allow_types(...) "
    "in the worker and the client"
)

_MESSAGES = "langchain_core.messages"

#: The LangChain / LangGraph / deepagent-temporal types the converter revives besides
#: LangGraph's ``SAFE_MSGPACK_TYPES`` (found by recording every type the integration
#: tests and the example graphs decode; the messages are listed in full).
BUILTIN_TYPES: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            (f"{_MESSAGES}.{module}", f"{cls}{suffix}")
            for module, cls in (
                ("base", "BaseMessage"),
                ("ai", "AIMessage"),
                ("human", "HumanMessage"),
                ("system", "SystemMessage"),
                ("tool", "ToolMessage"),
                ("chat", "ChatMessage"),
                ("function", "FunctionMessage"),
            )
            for suffix in ("", "Chunk")
        ),
        (f"{_MESSAGES}.modifier", "RemoveMessage"),
        ("langchain_core.documents.base", "Document"),
        ("langgraph.types", "Send"),
        ("langgraph.types", "Command"),
        ("langgraph.types", "Interrupt"),
        ("langgraph.types", "Overwrite"),
        # our wire dataclasses: where they are defined and where they are re-exported
        *((cls.__module__, cls.__name__) for cls in (RunRequest, RunState)),
        ("deepagent_temporal.contract", "RunRequest"),
        ("deepagent_temporal.contract", "RunState"),
        # the engine's (a string: the client must not import the engine)
        ("deepagent_temporal.engine.activity", "NodeActivityInput"),
        ("deepagent_temporal.engine.activity", "NodeActivityOutput"),
    }
)


class UnsafePayloadError(ApplicationError):
    """A payload names a type the converter is not allowed to revive.

    Non-retryable: the same bytes are refused on every attempt. ``module`` and ``name``
    say what was refused (the first one; ``refused`` lists all, ``module.name``).
    """

    def __init__(self, module: Any, name: Any, kind: str = "type", *, also: Any = ()) -> None:
        self.module, self.name = str(module), str(name)
        first = f"{self.module}.{self.name}"
        self.refused = [first, *(a for a in dict.fromkeys(also) if a != first)]
        if kind == "method":
            reason = "not an allowed method call"
        else:
            what = " (a LangChain 'lc' constructor)" if kind == "lc" else ""
            reason = f"not an allowed type{what}; {_HOW_TO_ALLOW}"
        others = f" (and {', '.join(self.refused[1:])})" if len(self.refused) > 1 else ""
        super().__init__(
            f"refusing to decode {first}{others}: {reason}",
            type="UnsafePayloadError",
            non_retryable=True,
        )


# ----------------------------------------------------------------------- allowlist

_lock = threading.Lock()
_user_types: frozenset[tuple[str, str]] = frozenset()
_serde: Any = None
#: while from_payload decodes: the (module, name, kind) LangGraph refused, in order
_refusals: contextvars.ContextVar[list[tuple[str, str, str]] | None] = contextvars.ContextVar(
    "deepagent_converter_refusals", default=None
)


def _type_key(spec: Any) -> tuple[str, str]:
    if isinstance(spec, type):
        return (spec.__module__, spec.__name__)
    if isinstance(spec, str):
        module, sep, name = spec.strip().partition(":")
        if sep and module and name and "." not in name:
            return (module, name)
    elif isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(p, str) and p for p in spec):
        return (spec[0], spec[1])
    raise TypeError(
        f"allow_types() takes classes, (module, name) pairs or 'package.module:Name' "
        f"strings, not {spec!r}"
    )


def allow_types(*types: type | tuple[str, str] | str) -> None:
    """Let the converter revive these types too (in this process; call it in the worker
    and in the client). Each is a class, a ``(module, name)`` pair or a
    ``"package.module:Name"`` string; the module is imported only when a payload holds
    one. Idempotent."""
    global _user_types, _serde
    keys = frozenset(_type_key(t) for t in types)
    with _lock:
        if keys <= _user_types:
            return
        _user_types = _user_types | keys
        _serde = None  # the next decode builds a serializer with the new allowlist


def allow_types_from_spec(spec: str | None) -> None:
    """:func:`allow_types` for a ``"pkg.mod:A, pkg.mod:B"`` list (an env var's value)."""
    allow_types(*(part for part in (spec or "").replace(",", " ").split() if part))


def allowed_types() -> frozenset[tuple[str, str]]:
    """Every ``(module, name)`` the converter revives now (LangGraph's safe list too)."""
    from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_TYPES

    return frozenset(k for k in SAFE_MSGPACK_TYPES if len(k) == 2) | _serde_allowlist()


def _serde_allowlist() -> frozenset[tuple[str, str]]:
    return BUILTIN_TYPES | _env_types() | _user_types


@functools.cache
def _env_types() -> frozenset[tuple[str, str]]:
    """The types the process's environment allows (``WorkerEnv.allowed_types``)."""
    spec = WorkerEnv.from_env().allowed_types or ""
    return frozenset(_type_key(part) for part in spec.replace(",", " ").split() if part)


def allow_graph_types(graph: Any) -> None:
    """Allow the classes a compiled graph's state schema names (pydantic models,
    dataclasses, enums), so a worker decodes its own state without configuration."""
    found: set[type] = set()

    def visit(tp: Any, depth: int = 0) -> None:
        if depth > 6 or tp is None:
            return
        for arg in typing.get_args(tp):
            visit(arg, depth + 1)
        if not isinstance(tp, type) or tp in found or tp.__module__ == "builtins":
            return
        if dataclasses.is_dataclass(tp) or issubclass(tp, enum.Enum) or hasattr(tp, "model_fields"):
            found.add(tp)
            hints = getattr(tp, "model_fields", None) or {}
            for info in hints.values():
                visit(getattr(info, "annotation", None), depth + 1)
            if dataclasses.is_dataclass(tp):
                for f in dataclasses.fields(tp):
                    visit(f.type if not isinstance(f.type, str) else None, depth + 1)

    builder = getattr(graph, "builder", None)
    schemas = set(getattr(builder, "schemas", None) or ())
    for attr in ("state_schema", "input_schema", "output_schema"):
        schemas.add(getattr(builder, attr, None))
    for schema in schemas:
        if schema is None:
            continue
        try:
            hints = typing.get_type_hints(schema, include_extras=True)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: nothing to add
            hints = {}
        visit(schema)
        for tp in hints.values():
            visit(tp)
    if found:
        allow_types(*found)


def _json_allowlist(keys: Iterable[tuple[str, str]]) -> set[tuple[str, ...]]:
    # the JSON form names a type by its id list: module parts + name
    return {(*module.split("."), name) for module, name in keys}


# ------------------------------------------------------------------------ serializer


def _on_serde_event(event: Any) -> None:
    """LangGraph reports each refused name; remember it for the decode in progress."""
    refusals = _refusals.get()
    if refusals is not None and event.get("kind") in ("msgpack_blocked", "msgpack_method_blocked"):
        kind = "method" if "method" in event else "type"
        name = f"{event['name']}.{event['method']}" if kind == "method" else event["name"]
        refusals.append((event["module"], name, kind))


class _OwnRefusalsFilter(logging.Filter):
    """Drop LangGraph's "Blocked deserialization" warning for our decodes: the
    UnsafePayloadError says it, and how to allow the type here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _refusals.get() is None or not str(record.msg).startswith("Blocked")


def _lc_constructor_key(value: dict[str, Any]) -> tuple[str, str]:
    """The class an ``"lc"`` constructor dict would instantiate (``(module, name)``)."""
    ident = value.get("id")
    if not isinstance(ident, list | tuple) or len(ident) < 2:
        return ("<invalid lc id>", repr(ident))
    path = tuple(str(p) for p in ident)
    if value.get("lc") == 1:
        from langchain_core.load.load import ALL_SERIALIZABLE_MAPPINGS

        path = tuple(ALL_SERIALIZABLE_MAPPINGS.get(path, path))
    return (".".join(path[:-1]), path[-1])


def _is_lc_constructor(value: dict[Any, Any]) -> bool:
    return value.get("type") == "constructor" and value.get("lc") in (1, 2) and "id" in value


def _check_lc_constructor(value: dict[str, Any]) -> None:
    key = _lc_constructor_key(value)
    if key not in allowed_types():
        raise UnsafePayloadError(*key, kind="lc")


def _raw_ext(code: int, data: bytes) -> Any:
    # an extension's (module, name, args) as plain data: nothing imported
    return ormsgpack.unpackb(data, ext_hook=_raw_ext, option=ormsgpack.OPT_NON_STR_KEYS)


def _refuse_lc_constructors(data: bytes) -> None:
    """Refuse ``"lc"`` constructor dicts naming a type outside the allowlist, anywhere in
    a msgpack payload (they decode to inert dicts, but ``langchain_core.load`` would
    instantiate them later)."""
    stack = [ormsgpack.unpackb(data, ext_hook=_raw_ext, option=ormsgpack.OPT_NON_STR_KEYS)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if _is_lc_constructor(item):
                _check_lc_constructor(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


_hooked = False


def _make_serde() -> Any:
    global _hooked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    class AllowlistSerializer(JsonPlusSerializer):
        """``JsonPlusSerializer`` whose JSON reviver obeys the allowlist too."""

        def _reviver(self, value: dict[str, Any]) -> Any:
            if _is_lc_constructor(value):
                _check_lc_constructor(value)
            return super()._reviver(value)

    if not _hooked:
        _hooked = True
        register_serde_event_listener(_on_serde_event)
        for name in ("langgraph.checkpoint.serde.jsonplus", "langgraph.checkpoint.serde._msgpack"):
            logging.getLogger(name).addFilter(_OwnRefusalsFilter())
    allowlist = _serde_allowlist()
    # LangGraph's own allowlist: a name outside it is never imported
    return AllowlistSerializer(
        allowed_msgpack_modules=sorted(allowlist),
        allowed_json_modules=sorted(_json_allowlist(allowlist)),
    )


def serde() -> Any:
    """The process-wide LangGraph serializer (created lazily), limited to
    :func:`allowed_types`. Use :func:`loads` to get :class:`UnsafePayloadError` on a
    refused type; ``serde().loads_typed`` alone returns a refused object's raw data."""
    global _serde
    current = _serde
    if current is None:
        with _lock:
            if _serde is None:
                _serde = _make_serde()
            current = _serde
    return current


def loads(data: bytes) -> Any:
    """Decode a ``binary/langgraph-msgpack`` payload's bytes; :class:`UnsafePayloadError`
    if it names a type that is not allowed (nothing of that type is imported or called;
    allowed objects around it may have been built, and are dropped)."""
    if b"constructor" in data and b"lc" in data:  # cheap test: most payloads skip the walk
        _refuse_lc_constructors(data)
    token = _refusals.set([])
    try:
        value = serde().loads_typed(("msgpack", data))
        refusals = _refusals.get()
    finally:
        _refusals.reset(token)
    if refusals:
        also = [f"{module}.{name}" for module, name, _ in refusals[1:]]
        raise UnsafePayloadError(*refusals[0], also=also)
    return value


# ------------------------------------------------------------------------- converter


def needs_langgraph_encoding(value: Any, _depth: int = 0) -> bool:
    """True when ``value`` holds anything the JSON converter would not round-trip."""
    if isinstance(value, _PRIMITIVES):
        return False
    if _depth > 64:
        return True
    if isinstance(value, dict):
        return any(
            not isinstance(k, str) or needs_langgraph_encoding(v, _depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(needs_langgraph_encoding(v, _depth + 1) for v in value)
    module = type(value).__module__ or ""
    if module.startswith("temporalio"):
        # Temporal's own wire types (workflow stream signals, polls, ...).
        return False
    if dataclasses.is_dataclass(value) and module.startswith("deepagent_temporal"):
        return True
    # tuples, sets, pydantic models, LangChain Serializable, Send, Command, ...
    return True


class LangGraphPayloadConverter(temporalio.converter.EncodingPayloadConverter):
    """Encodes LangChain/LangGraph values with LangGraph's msgpack serializer; decodes
    only allowed types (see the module docstring)."""

    @property
    def encoding(self) -> str:
        return ENCODING

    def to_payload(self, value: Any) -> Payload | None:
        if not needs_langgraph_encoding(value):
            return None
        kind, data = serde().dumps_typed(value)
        if kind != "msgpack":
            return None
        return Payload(metadata={"encoding": ENCODING.encode()}, data=data)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return loads(payload.data)


class DeepAgentPayloadConverter(temporalio.converter.CompositePayloadConverter):
    """Default Temporal converters, with LangGraph encoding tried before JSON."""

    def __init__(self) -> None:
        defaults = list(
            temporalio.converter.DefaultPayloadConverter.default_encoding_payload_converters
        )
        json_index = next(
            i
            for i, c in enumerate(defaults)
            if isinstance(c, temporalio.converter.JSONPlainPayloadConverter)
        )
        defaults.insert(json_index, LangGraphPayloadConverter())
        super().__init__(*defaults)

    #: a payload Temporal would refuse fails with PayloadTooLargeError, which names the fix;
    #: None with payload storage (deepagent_temporal.storage): large payloads go to S3
    size_limit: int | None = payload_limits.TEMPORAL_PAYLOAD_LIMIT

    def to_payloads(self, values: Any) -> list[Payload]:
        payloads = super().to_payloads(values)
        if self.size_limit:
            payload_limits.check_payload_size(payloads, self.size_limit)
        return payloads

    def from_payloads(self, payloads: Any, type_hints: list[type] | None = None) -> list[Any]:
        # A stored or compressed payload reaches the converter only when this process
        # lacks the payload storage settings: say so instead of "Unknown payload encoding".
        payload_limits.check_readable(payloads)
        return super().from_payloads(payloads, type_hints)


data_converter = payload_limits.readable(
    dataclasses.replace(
        temporalio.converter.DataConverter.default,
        payload_converter_class=DeepAgentPayloadConverter,
    )
)


def uses_our_converter(client: Any) -> bool:
    dc = getattr(client, "data_converter", None)
    cls = getattr(dc, "payload_converter_class", None)
    return (
        isinstance(dc, payload_limits.ReadableDataConverter)
        and isinstance(cls, type)
        and issubclass(cls, DeepAgentPayloadConverter)
    )


def with_data_converter(client: Any) -> Any:
    """Return ``client`` itself if it already uses our converter (and the payload storage
    the environment configures, :mod:`deepagent_temporal.storage`), else a twin that does.

    The twin shares the connection (service client) of the original.
    """
    ours = uses_our_converter(client)
    if ours and not payload_storage.wanted(client.data_converter):
        return client
    from temporalio.client import Client

    config = client.config()
    dc = config.get("data_converter") or temporalio.converter.DataConverter.default
    cls = dc.payload_converter_class if ours else DeepAgentPayloadConverter
    config["data_converter"] = payload_storage.apply(
        payload_limits.readable(dataclasses.replace(dc, payload_converter_class=cls))
    )
    return Client(**config)
