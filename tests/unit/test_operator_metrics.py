"""Operator metrics through prometheus_client: the names dashboards use stay the same."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest

from deepagent_operator.kube import Kube
from deepagent_operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
#: every sample name the hand-written exporter had (tests/k8s and bench read some of them)
LEGACY_NAMES = {
    "reconcile_total",
    "reconcile_seconds_total",
    "spec_errors_total",
    "child_writes_total",
    "status_writes_total",
    "status_refreshes_coalesced_total",
    "drift_repairs_total",
    "drift_checks_total",
    "resyncs_total",
    "api_requests_total",
    "api_request_seconds_total",
    "api_requests_by_total",
    "api_writes_total",
}


def samples(metrics: OperatorMetrics) -> dict[str, float]:
    """``{name{labels}: value}`` without the ``deepagent_operator_`` prefix, as the harness reads it."""
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key.removeprefix("deepagent_operator_")] = float(value)
    return out


def test_legacy_metric_names_are_exported():
    metrics = OperatorMetrics()
    metrics.observe_reconcile(0.25)
    metrics.observe_request("PATCH", "deployments", 200, 0.01)
    metrics.api_writes.labels("PATCH", "deployments").inc()
    names = {re.sub(r"\{.*", "", key) for key in samples(metrics)}
    assert LEGACY_NAMES <= names
    got = samples(metrics)
    assert got["reconcile_total"] == 1 and got["reconcile_seconds_total"] == 0.25
    assert got["reconcile_duration_seconds_count"] == 1
    assert got['api_requests_by_total{code="200",method="PATCH",resource="deployments"}'] == 1


def test_each_instance_has_its_own_registry():
    a, b = OperatorMetrics(), OperatorMetrics()  # no duplicate-registration error
    a.child_writes.inc()
    assert samples(a)["child_writes_total"] == 1
    assert samples(b)["child_writes_total"] == 0


def test_readme_lists_every_metric():
    readme = (ROOT / "operator" / "README.md").read_text()
    for family in OperatorMetrics().registry.collect():
        exported = f"{family.name}_total" if family.type == "counter" else family.name
        assert re.search(rf"`{exported}[`{{]", readme), exported


class _Response:
    def __init__(self, status: int, body: object):
        self.status = status
        self._raw = json.dumps(body).encode()

    def read(self) -> bytes:
        return self._raw


class _FakeApiClient:
    """The two calls Kube makes on a kubernetes ApiClient; answers 200, or 404 for GETs."""

    def param_serialize(self, method, resource_path, header_params, body, auth_settings):
        return method, resource_path, header_params, body, None

    def call_api(self, method, url, header_params, body, post_params, _request_timeout):
        if method == "GET":
            return _Response(404, {"message": "not found"})
        return _Response(200, {"kind": "DeepAgent"})


def test_kube_counts_requests_and_writes():
    metrics = OperatorMetrics()
    kube = Kube(_FakeApiClient(), metrics=metrics)  # type: ignore[arg-type]
    assert kube.get("Deployment", "agents", "coder-worker") is None
    kube.patch_status("DeepAgent", "agents", "coder", {"phase": "Ready"})
    got = samples(metrics)
    assert got["api_requests_total"] == 2
    assert got['api_requests_by_total{code="404",method="GET",resource="deployments"}'] == 1
    assert got['api_writes_total{method="PATCH",resource="deepagents/status"}'] == 1
    assert not any(k.startswith("api_writes_total") and "GET" in k for k in got)


def test_serve_exposes_metrics_over_http():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = OperatorMetrics()
    metrics.resyncs.inc()
    server = metrics.serve(port, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "deepagent_operator_resyncs_total 1.0" in text
