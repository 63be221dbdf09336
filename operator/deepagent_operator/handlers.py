"""kopf handlers: small, one per event; all the work is in :mod:`.reconcile`.

* create / update (spec) / resume of a DeepAgent -> full reconcile (children + status);
  semantic errors become a ``SpecValid=False`` condition and a ``kopf.TemporaryError``
  with exponential back-off (never a crash loop);
* watch events of the children (server-side filtered by the managed-by label) ->
  status refresh, or a full reconcile when a child was deleted or edited by hand;
* a periodic resync (background task, no finalizer needed) re-reads referenced Secrets /
  ConfigMaps (and the Managed Redis password Secret), repairs drift that produced no event,
  and drops the in-memory state of agents that no longer exist.

Secrets are never watched or listed (that would need ``list`` on every Secret in scope);
kopf's cluster scanning (CRDs, namespaces) is off: the operator needs no cluster-scoped
permission when it watches a list of namespaces (the DeepAgent CRD must exist before it starts).

No handler needs a finalizer: children are garbage-collected through ownerReferences, so a
DeepAgent can be deleted even while the operator is down. The startup handler also serves
the Prometheus metrics (:mod:`.metrics`) when ``--metrics-port`` is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from . import GROUP, MANAGER, PLURAL, VERSION
from .children import MANAGED_BY
from .config import OperatorConfig
from .kube import Kube, make_api_client
from .metrics import OperatorMetrics
from .model import SpecError
from .reconcile import Reconciler
from .state import WATCHED_KINDS

log = logging.getLogger("deepagent_operator")

CHILD_RESOURCES = {
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "Service": ("", "v1", "services"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
}
CHILD_SELECTOR = f"{MANAGED_BY}={MANAGER}"
assert tuple(CHILD_RESOURCES) == WATCHED_KINDS


def backoff(retry: int, config: OperatorConfig) -> float:
    """5 s, 10 s, 20 s, ... capped by ``config.max_backoff_seconds``."""
    return float(min(config.max_backoff_seconds, 5 * 2 ** min(retry, 16)))


def _config(memo: Any) -> OperatorConfig:
    cfg = getattr(memo, "config", None)
    return cfg if isinstance(cfg, OperatorConfig) else OperatorConfig.from_env()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    config = _config(memo)
    memo.config = config
    # Progress and diff-base in annotations only: the status schema stays ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="deepagent.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="deepagent.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "deepagent.dev/finalizer"
    # No CRD or namespace watching: no cluster-scoped permissions in namespaced mode.
    settings.scanning.disabled = True
    settings.watching.server_timeout = int(config.watch_server_timeout)
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = config.connect_timeout
    settings.networking.connect_timeout = config.connect_timeout
    settings.networking.request_timeout = 60
    # Only our explicit kopf.event() calls and warnings become Kubernetes Events.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = config.workers
    # Bounded per-object workers: kopf's own API session has no connection limit, so a
    # burst of new DeepAgents (each worker patching its object) would otherwise open a TLS
    # connection per object at once, each with its buffers (about 0.2 MB per agent at peak).
    settings.queueing.worker_limit = config.workers * 4
    # A worker holds its slot while idle: let it go soon (a new event starts a new one).
    settings.queueing.idle_timeout = 0.5
    for group, _version, plural in CHILD_RESOURCES.values():
        settings.watching.label_selectors[(group, plural) if group else plural] = CHILD_SELECTOR
    metrics = OperatorMetrics()
    kube = Kube(make_api_client(config.workers), metrics=metrics)
    memo.reconciler = Reconciler(kube, config, metrics=metrics)
    memo.tasks = [asyncio.create_task(_resync_loop(memo))]
    memo.metrics_server = metrics.serve(config.metrics_port) if config.metrics_port else None
    logger.info(
        "deepagent-operator started: namespaces=%s default_image=%r redis_image=%r",
        list(config.namespaces) or "ALL",
        config.default_image,
        config.redis_image,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "tasks", []):
        task.cancel()
    await asyncio.gather(*getattr(memo, "tasks", []), return_exceptions=True)
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        await asyncio.to_thread(server.shutdown)
        server.server_close()


def _reconcile(body: kopf.Body, memo: kopf.Memo, retry: int, logger: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    try:
        reconciler.reconcile(body)
    except SpecError as err:
        delay = backoff(retry, reconciler.config)
        # kopf logs (and posts as a Warning event) the TemporaryError; the condition and a
        # Warning event with the field's reason were written by the reconciler.
        raise kopf.TemporaryError(f"{err} (retrying in {delay:.0f}s)", delay=delay) from None
    except Exception as exc:  # API hiccups, conflicts: retry soon, never crash
        delay = min(backoff(retry, reconciler.config), 30.0)
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=delay) from exc


@kopf.on.resume(GROUP, VERSION, PLURAL)
def resume_agent(body: kopf.Body, memo: kopf.Memo, retry: int, logger: Any, **_: Any) -> None:
    _reconcile(body, memo, retry, logger)


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_agent(body: kopf.Body, memo: kopf.Memo, retry: int, logger: Any, **_: Any) -> None:
    _reconcile(body, memo, retry, logger)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def update_agent(body: kopf.Body, memo: kopf.Memo, retry: int, logger: Any, **_: Any) -> None:
    _reconcile(body, memo, retry, logger)


@kopf.on.event(GROUP, VERSION, PLURAL)
def agent_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Remember each DeepAgent as its watch shows it (status refreshes read no DeepAgent);
    forget the in-memory state of deleted ones (no finalizer needed)."""
    reconciler: Reconciler | None = getattr(memo, "reconciler", None)
    if reconciler is None:
        return
    obj = event.get("object") or {}
    if event.get("type") == "DELETED":
        meta = obj.get("metadata") or {}
        reconciler.forget(meta.get("namespace", ""), meta.get("name", ""))
    elif not (obj.get("metadata") or {}).get("deletionTimestamp"):
        reconciler.observe_agent(obj)


def _child_handler(kind: str):
    def handler(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler | None = getattr(memo, "reconciler", None)
        if reconciler is None:
            return
        try:
            reconciler.on_child_event(kind, event.get("type"), event.get("object") or {})
        except Exception:  # an event handler never retries: the resync catches up
            log.exception("handling %s event failed", kind)

    handler.__name__ = f"child_{kind.lower()}"
    return handler


for _kind, (_group, _version, _plural) in CHILD_RESOURCES.items():
    _args = (_group, _version, _plural) if _group else (_version, _plural)
    kopf.on.event(*_args, labels={MANAGED_BY: MANAGER}, id=f"child-{_plural}")(
        _child_handler(_kind)
    )


async def _resync_loop(memo: kopf.Memo) -> None:
    """Periodically reconcile every DeepAgent (referenced data changes, missed drift)."""
    config: OperatorConfig = memo.config
    if config.resync_seconds <= 0:
        return
    sem = asyncio.Semaphore(max(1, config.workers // 2))

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            try:
                await asyncio.to_thread(memo.reconciler.reconcile, body, True)
            except SpecError:
                pass  # reported as a condition
            except Exception:
                log.exception(
                    "resync of %s/%s failed",
                    body["metadata"].get("namespace"),
                    body["metadata"].get("name"),
                )

    while True:
        await asyncio.sleep(config.resync_seconds)
        try:
            bodies: list[dict[str, Any]] = []
            for ns in config.namespaces or (None,):
                bodies += await asyncio.to_thread(
                    lambda ns=ns: list(memo.reconciler.kube.list("DeepAgent", ns))
                )
            memo.reconciler.retain(
                {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in bodies}
            )
            bodies = [b for b in bodies if not b["metadata"].get("deletionTimestamp")]
            await asyncio.gather(*(one(b) for b in bodies))
            memo.reconciler.metrics.resyncs.inc()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("resync failed")
