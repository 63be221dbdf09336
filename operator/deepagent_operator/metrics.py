"""The operator's Prometheus metrics (``prometheus_client``), in a registry of their own.

Each :class:`OperatorMetrics` has its own ``CollectorRegistry``, so tests and tools can
create several (one per :class:`~.kube.Kube` or :class:`~.reconcile.Reconciler`) without
double registration. The metric names are the ones the operator always exported
(``deepagent_operator_<name>``); dashboards and ``tests/k8s`` depend on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

PREFIX = "deepagent_operator"


class OperatorMetrics:
    """Counters of reconciles, writes and Kubernetes API requests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        counter = self._counter
        self.reconciles = counter("reconcile_total", "Full reconciles of a DeepAgent.")
        self.reconcile_seconds = counter(
            "reconcile_seconds_total", "Seconds spent in full reconciles."
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Duration of one full reconcile of a DeepAgent.",
            registry=self.registry,
        )
        self.spec_errors = counter(
            "spec_errors_total", "Reconciles stopped by a spec error (SpecValid=False)."
        )
        self.child_writes = counter("child_writes_total", "Children created, applied or deleted.")
        self.status_writes = counter("status_writes_total", "Patches of a DeepAgent's status.")
        self.status_refreshes_coalesced = counter(
            "status_refreshes_coalesced_total",
            "Status refreshes skipped because one for the same DeepAgent was already waiting.",
        )
        self.drift_repairs = counter(
            "drift_repairs_total", "Reconciles because a child was deleted."
        )
        self.drift_checks = counter(
            "drift_checks_total", "Reconciles because a child may have been edited."
        )
        self.resyncs = counter("resyncs_total", "Periodic resyncs of every DeepAgent.")
        self.api_requests = counter("api_requests_total", "Requests to the Kubernetes API.")
        self.api_request_seconds = counter(
            "api_request_seconds_total", "Seconds spent in requests to the Kubernetes API."
        )
        self.api_requests_by = counter(
            "api_requests_by_total",
            "Requests to the Kubernetes API by method, resource and HTTP status code.",
            ("method", "resource", "code"),
        )
        self.api_writes = counter(
            "api_writes_total",
            "Successful writes to the Kubernetes API by method and resource.",
            ("method", "resource"),
        )

        self.tracked_agents = Gauge(
            f"{PREFIX}_tracked_agents",
            "DeepAgents the operator keeps in-memory state for (drops to 0 once all are gone).",
            registry=self.registry,
        )
        self.agent_locks = Gauge(
            f"{PREFIX}_agent_locks",
            "Per-agent locks held or waited for right now.",
            registry=self.registry,
        )

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def observe_reconcile(self, seconds: float) -> None:
        """Count one full reconcile that took ``seconds``."""
        self.reconciles.inc()
        self.reconcile_seconds.inc(seconds)
        self.reconcile_duration.observe(seconds)

    def observe_request(self, method: str, resource: str, code: int, seconds: float) -> None:
        """Count one Kubernetes API request (any outcome)."""
        self.api_requests.inc()
        self.api_request_seconds.inc(seconds)
        self.api_requests_by.labels(method, resource, str(code)).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread; ``shutdown()`` stops it."""
        server, _thread = _start_http_server(port, addr, registry=self.registry)
        return server
