"""A thin raw-JSON layer over the kubernetes client (auth, TLS, kubeconfig come from it).

Objects are plain camelCase dicts in and out. Writes use server-side apply with a
fixed field manager, so applying an unchanged manifest is a no-op on the server too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from . import GROUP, MANAGER, PLURAL, VERSION
from .metrics import OperatorMetrics

# kind -> (api prefix, plural)
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "Service": ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "DeepAgent": (f"/apis/{GROUP}/{VERSION}", PLURAL),
    "Event": ("/api/v1", "events"),
}


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str, path: str):
        self.status = status
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path}: HTTP {status}: {msg}")
        self.message = msg


def make_api_client(pool_size: int = 16) -> k8s_client.ApiClient:
    cfg = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = max(pool_size, 4)
    return k8s_client.ApiClient(cfg)


class Kube:
    def __init__(
        self,
        api_client: k8s_client.ApiClient | None = None,
        timeout: float = 30.0,
        metrics: OperatorMetrics | None = None,
    ):
        self.api = api_client or make_api_client()
        self.timeout = timeout
        #: Request and write counters (served on the operator's /metrics).
        self.metrics = metrics or OperatorMetrics()

    # -- raw -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        if query:
            path = f"{path}?{urlencode(query)}"
        m, url, hdrs, data, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        t0 = time.monotonic()
        resp = self.api.call_api(
            m, url, header_params=hdrs, body=data, post_params=post, _request_timeout=self.timeout
        )
        raw = resp.read()
        seconds = time.monotonic() - t0
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        parts = path.split("?")[0].split("/")
        # The resource of a namespaced path (`.../namespaces/<ns>/<resource>/...`), else the
        # last segment.
        resource = (
            parts[parts.index("namespaces") + 2]
            if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2
            else parts[-1]
        )
        self.metrics.observe_request(method, resource, resp.status, seconds)
        if resp.status >= 400:
            raise ApiError(resp.status, parsed, method, path)
        if method != "GET":
            written = resource + ("/status" if parts[-1] == "status" else "")
            self.metrics.api_writes.labels(method, written).inc()
        return resp.status, parsed

    @staticmethod
    def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = KINDS[kind]
        p = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
        if name:
            p += f"/{quote(name)}"
        if sub:
            p += f"/{sub}"
        return p

    # -- typed-ish helpers -----------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(kind, namespace, name))[1]
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> Iterator[dict[str, Any]]:
        prefix, plural = KINDS[kind]
        path = (
            f"{prefix}/namespaces/{quote(namespace)}/{plural}"
            if namespace
            else f"{prefix}/{plural}"
        )
        query: dict[str, Any] = {"limit": 500}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            _, page = self.request("GET", path, query=query)
            yield from page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return
            query["continue"] = cont

    def apply(self, obj: dict[str, Any], manager: str = MANAGER) -> dict[str, Any]:
        """Server-side apply (force: the operator's fields are its own)."""
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            self.path(obj["kind"], meta["namespace"], meta["name"]),
            query={"fieldManager": manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )[1]

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch (``metadata.resourceVersion`` in it makes it conditional)."""
        return self.request(
            "PATCH",
            self.path(kind, namespace, name),
            query={"fieldManager": MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
        )[1]

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """POST; None when it already exists."""
        try:
            return self.request(
                "POST",
                self.path(obj["kind"], obj["metadata"]["namespace"]),
                query={"fieldManager": MANAGER},
                body=obj,
            )[1]
        except ApiError as e:
            if e.status == 409:
                return None
            raise

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request(
                "DELETE", self.path(kind, namespace, name), body={"propagationPolicy": "Background"}
            )
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise

    def patch_status(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            self.path(kind, namespace, name, "status"),
            body={"status": patch},
            content_type="application/merge-patch+json",
        )[1]
