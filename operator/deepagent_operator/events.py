"""Kubernetes Events on a DeepAgent: through kopf's queue inside a handler, else a POST."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

from . import API_VERSION, KIND, MANAGER
from .kube import Kube
from .status import now_iso

log = logging.getLogger("deepagent_operator")

EventFn = Callable[[Mapping[str, Any], str, str, str], None]


def object_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", KIND),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
    }


def _kopf_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post through kopf's event queue (raises LookupError outside kopf's handler context)."""
    import kopf

    kopf.event(object_ref(body), type=type_, reason=reason, message=message[:1000])  # type: ignore[arg-type]


def post_event(kube: Kube, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the DeepAgent (kopf's queue in handlers, else a direct POST)."""
    try:
        _kopf_event(body, type_, reason, message)
        return
    except LookupError:  # resync loop / outside kopf's per-object context
        pass
    meta = body.get("metadata") or {}
    now = now_iso()
    try:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "generateName": f"{meta.get('name')}.",
                    "namespace": meta.get("namespace"),
                },
                "involvedObject": object_ref(body)["metadata"]
                | {"apiVersion": API_VERSION, "kind": KIND},
                "type": type_,
                "reason": reason,
                "message": message[:1000],
                "source": {"component": MANAGER},
                "reportingComponent": MANAGER,
                "reportingInstance": socket.gethostname(),
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )
    except Exception:  # events are best effort
        log.debug("could not post event %s %s", reason, message, exc_info=True)
