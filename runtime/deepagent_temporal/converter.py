"""Temporal data converter that round-trips LangChain / LangGraph objects.

Temporal's default JSON converter turns an ``AIMessage`` into a plain dict, so a node
running in an activity would receive its state as dicts and the workflow would get
dicts back. This converter encodes any value that contains something JSON cannot carry
faithfully (LangChain messages, pydantic models, ``Send``, ``Command``, ``Interrupt``,
our own dataclasses, tuples, ...) with LangGraph's own checkpoint serializer
(``JsonPlusSerializer``, msgpack), and leaves everything else (Temporal's own
dataclasses, plain JSON values) to the default converters.

Payloads come only from workers and clients of the same namespace, so the serializer is
allowed to revive any importable type (as LangGraph's default checkpoint serde does).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import temporalio.converter
from temporalio.api.common.v1 import Payload

ENCODING = "binary/langgraph-msgpack"

_PRIMITIVES = (str, int, float, bool, type(None), bytes)

_serde: Any = None


class _OwnTypesFilter(logging.Filter):
    """Drop LangGraph's "unregistered type" warning for our own wire dataclasses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "deepagent_temporal." not in str(record.args)


def _install_log_filter() -> None:
    for name in ("langgraph.checkpoint.serde.jsonplus", "langgraph.checkpoint.serde._msgpack"):
        logging.getLogger(name).addFilter(_OwnTypesFilter())


def serde() -> Any:
    """The process-wide LangGraph serializer (created lazily)."""
    global _serde
    if _serde is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

            _install_log_filter()
            _serde = JsonPlusSerializer(allowed_msgpack_modules=True)
            import os as _os
            if _os.environ.get("DEEPAGENT_SERDE_TRACE"):
                from langgraph.checkpoint.serde import _msgpack as _m
                from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
                _m.SAFE_MSGPACK_TYPES = frozenset()
                _path = _os.environ["DEEPAGENT_SERDE_TRACE"]
                def _trace(ev):
                    with open(_path, "a") as f:
                        f.write(f"{_os.getpid()} {ev['kind']} {ev['module']} {ev['name']}\n")
                register_serde_event_listener(_trace)
    return _serde


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
    """Encodes LangChain/LangGraph values with LangGraph's msgpack serializer."""

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
        return serde().loads_typed(("msgpack", payload.data))


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


data_converter = dataclasses.replace(
    temporalio.converter.DataConverter.default,
    payload_converter_class=DeepAgentPayloadConverter,
)


def uses_our_converter(client: Any) -> bool:
    dc = getattr(client, "data_converter", None)
    cls = getattr(dc, "payload_converter_class", None)
    return isinstance(cls, type) and issubclass(cls, DeepAgentPayloadConverter)


def with_data_converter(client: Any) -> Any:
    """Return ``client`` itself if it already uses our converter, else a twin that does.

    The twin shares the connection (service client) of the original.
    """
    if uses_our_converter(client):
        return client
    from temporalio.client import Client

    config = client.config()
    dc = config.get("data_converter") or temporalio.converter.DataConverter.default
    config["data_converter"] = dataclasses.replace(
        dc, payload_converter_class=DeepAgentPayloadConverter
    )
    return Client(**config)
