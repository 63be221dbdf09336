"""Level-triggered reconciliation: desired children vs live children, writing only differences.

Every entry point (kopf create/update/resume handlers, child watch events, the periodic
resync) ends in :meth:`Reconciler.reconcile` or :meth:`Reconciler.refresh_status`, both
serialised per DeepAgent by a lock. A child is written (server-side apply) only when the
desired manifest is not already a subset of the live object, and the status only when it
differs, so re-running with nothing changed (e.g. after an operator restart) makes zero
writes.
"""

from __future__ import annotations

import base64
import collections
import datetime
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pydantic
from kubernetes.utils import parse_quantity

from . import API_VERSION, KIND, MANAGER
from .children import (
    AGENT_LABEL,
    HASH_ANNOTATION,
    SpecError,
    build_children,
    build_redis_secret,
    check_references,
    config_hash,
    redis_name,
    redis_secret_name,
    referenced_objects,
    resolve_image,
    resolve_temporal_address,
    task_queue,
    worker_name,
)
from .config import OperatorConfig
from .kube import ApiError, Kube
from .model import DeepAgentSpec, format_validation_error, parse_spec
from .status import compute_status

log = logging.getLogger("deepagent_operator")

EventFn = Callable[[Mapping[str, Any], str, str, str], None]
STATUS_KEYS = (
    "observedGeneration",
    "phase",
    "ready",
    "conditions",
    "workers",
    "redis",
    "taskQueue",
)


# -- comparison helpers ----------------------------------------------------------------
def _quantity_equal(a: Any, b: Any) -> bool:
    try:
        qa: Decimal = parse_quantity(a)
        qb: Decimal = parse_quantity(b)
    except (ValueError, TypeError, ArithmeticError):
        return False
    return qa == qb


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field set in ``desired`` has the same value in ``live``.

    Fields the server adds (defaults, status, uid, ...) are ignored; list lengths must
    match; quantities compare by value ("0.5" == "500m").
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return not desired
        return all(is_subset(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list):
            return not desired
        return len(desired) == len(live) and all(
            is_subset(d, li) for d, li in zip(desired, live, strict=True)
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live or (desired is None and live is False)
    if desired == live:
        return True
    if desired in ("", None) and live in ("", None):
        return True
    if (
        isinstance(desired, (str, int, float))
        and isinstance(live, (str, int, float))
        and not isinstance(desired, bool)
        and not isinstance(live, bool)
    ):
        return _quantity_equal(desired, live)
    return False


def merge_patch(
    current: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    keys: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """RFC 7386 merge patch turning ``current`` into ``desired`` (restricted to ``keys``)."""
    current = current or {}
    out: dict[str, Any] = {}
    for k in keys if keys is not None else tuple(set(current) | set(desired)):
        if k not in desired:
            if current.get(k) is not None:
                out[k] = None
            continue
        d, c = desired[k], current.get(k)
        if isinstance(d, dict) and isinstance(c, dict):
            sub = merge_patch(c, d)
            if sub:
                out[k] = sub
        elif c != d:
            out[k] = d
    return out


def _status_inputs(child: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields of a Deployment / StatefulSet that :func:`compute_status` reads."""
    meta = child.get("metadata") or {}
    st = child.get("status") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        (child.get("spec") or {}).get("replicas"),
        st.get("observedGeneration"),
        st.get("readyReplicas"),
        st.get("availableReplicas"),
        st.get("updatedReplicas"),
    )


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def _ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", KIND),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
    }


def _kopf_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post through kopf's event queue (raises LookupError outside kopf's handler context)."""
    import kopf

    kopf.event(_ref(body), type=type_, reason=reason, message=message[:1000])  # type: ignore[arg-type]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, float] = collections.defaultdict(float)

    def inc(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self.counters[name] += value

    def render(self, extra: Mapping[str, float] | None = None) -> str:
        lines = []
        with self._lock:
            items = sorted({**self.counters, **(extra or {})}.items())
        for key, val in items:
            lines.append(f"deepagent_operator_{key} {val}")
        return "\n".join(lines) + "\n"


class Reconciler:
    def __init__(self, kube: Kube, config: OperatorConfig, event: EventFn | None = None):
        self.kube = kube
        self.config = config
        self._event_fn = event
        self.metrics = Metrics()
        self._locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        self._refresh_pending: set[tuple[str, str]] = set()
        #: (kind, ns, name) of the children that exist, as far as the child watch knows.
        self.seen: set[tuple[str, str, str]] = set()
        #: (kind, ns, name) -> the fields of a child that the status depends on, last seen.
        self._child_digests: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        #: (ns, name, uid) -> the status this process last wrote (fresher than any snapshot).
        self._written: dict[tuple[str, str, Any], dict[str, Any]] = {}
        #: (kind, ns, name) -> metadata.generation last written or seen by the operator.
        self.generations: dict[tuple[str, str, str], int] = {}

    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the DeepAgent (kopf's queue in handlers, else a direct POST)."""
        if self._event_fn is not None:
            self._event_fn(body, type_, reason, message)
            return
        try:
            _kopf_event(body, type_, reason, message)
            return
        except LookupError:  # resync loop / outside kopf's per-object context
            pass
        meta = body.get("metadata") or {}
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            self.kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "generateName": f"{meta.get('name')}.",
                        "namespace": meta.get("namespace"),
                    },
                    "involvedObject": _ref(body)["metadata"]
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

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[(namespace, name)]

    # -- full reconcile -------------------------------------------------------------
    def reconcile(self, body: Mapping[str, Any], thorough: bool = False) -> dict[str, Any]:
        """Bring the children of one DeepAgent to the desired state; return its status.

        Children that should not exist are looked up only if the child watch has seen them,
        or always when ``thorough`` (the periodic resync).
        Raises :class:`SpecError` (after writing a Failed condition) on semantic errors.
        """
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        with self._lock(ns, name):
            start = time.monotonic()
            try:
                return self._reconcile_locked(body, thorough)
            finally:
                self.metrics.inc("reconcile_total")
                self.metrics.inc("reconcile_seconds_total", time.monotonic() - start)

    def _parse(self, body: Mapping[str, Any]) -> DeepAgentSpec:
        try:
            return parse_spec(body.get("spec"))
        except pydantic.ValidationError as exc:
            field, msg = format_validation_error(exc)
            raise SpecError(
                field,
                msg,
                f"fix {field} (see `kubectl explain deepagent.spec`)",
                reason="InvalidSpec",
            ) from None

    def _data(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        obj = self.kube.get(kind, ns, name)
        if obj is None:
            return None
        data = dict(obj.get("data") or {})
        if kind == "Secret":
            for k, v in (obj.get("stringData") or {}).items():
                data[k] = base64.b64encode(v.encode()).decode()
        else:
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = v
        return data

    def _reconcile_locked(self, body: Mapping[str, Any], thorough: bool = False) -> dict[str, Any]:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        spec: DeepAgentSpec | None = None
        try:
            spec = self._parse(body)
            resolve_image(spec, self.config)
            resolve_temporal_address(spec, self.config)
            ref_data: dict[tuple[str, str], dict[str, Any] | None] = {}
            for ref in referenced_objects(spec):
                if (ref.kind, ref.name) not in ref_data:
                    ref_data[(ref.kind, ref.name)] = self._data(ref.kind, ns, ref.name)
            check_references(spec, ref_data)
            if spec.streaming.redis.mode == "Managed":
                ref_data[("Secret", redis_secret_name(name))] = self._ensure_redis_secret(body)
            hash_ = config_hash(spec, self.config, ref_data)
            desired = build_children(body, spec, self.config, hash_)
        except SpecError as err:
            self.metrics.inc("spec_errors_total")
            self._write_status(body, spec, error=err, deployment=None, statefulset=None, fetch=True)
            raise

        live: dict[str, dict[str, Any]] = {}
        for obj in desired.apply:
            kind, cname = obj["kind"], obj["metadata"]["name"]
            cur = self.kube.get(kind, ns, cname)
            if cur is not None and is_subset(obj, cur):
                live[kind] = cur
            else:
                try:
                    new = self.kube.apply(obj)
                except ApiError as e:
                    if e.status == 422 and kind == "StatefulSet" and cur is not None:
                        err = SpecError(
                            "spec.streaming.redis.storage",
                            f"cannot update StatefulSet {cname}: {e.message}",
                            f"delete StatefulSet {cname} to recreate it (PVCs are kept)",
                            reason="ImmutableField",
                        )
                        self._write_status(
                            body, spec, error=err, deployment=None, statefulset=cur, fetch=True
                        )
                        raise err from None
                    raise
                live[kind] = new
                self.metrics.inc("child_writes_total")
                self._on_written(body, kind, cname, cur, obj)
            self.seen.add((kind, ns, cname))
            gen = (live[kind].get("metadata") or {}).get("generation")
            if gen is not None:
                self.generations[(kind, ns, cname)] = gen
        for kind, cname in desired.absent:
            if not thorough and (kind, ns, cname) not in self.seen:
                continue
            cur = self.kube.get(kind, ns, cname)
            if cur is not None and _owned_by(cur, uid):
                self.kube.delete(kind, ns, cname)
                self.seen.discard((kind, ns, cname))
                self.metrics.inc("child_writes_total")
                self.event(
                    body,
                    "Normal",
                    "Deleted",
                    f"deleted {kind} {cname} (no longer needed by the spec)",
                )
        return self._write_status(
            body,
            spec,
            error=None,
            deployment=live.get("Deployment"),
            statefulset=live.get("StatefulSet"),
            config_hash_=hash_,
        )

    def _ensure_redis_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``<name>-redis-auth`` with a fresh password once; never rewrite it."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        data = self._data("Secret", ns, redis_secret_name(name))
        if data is not None:
            return data
        secret = build_redis_secret(body)
        created = self.kube.create(secret)
        self.metrics.inc("child_writes_total")
        if created is not None:
            self.event(
                body,
                "Normal",
                "Created",
                f"created Secret {redis_secret_name(name)} with a generated Redis password",
            )
            return dict(created.get("data") or {})
        # Lost a race with another reconcile: use whatever exists now.
        return self._data("Secret", ns, redis_secret_name(name)) or {}

    def _on_written(
        self,
        body: Mapping[str, Any],
        kind: str,
        cname: str,
        before: Mapping[str, Any] | None,
        obj: Mapping[str, Any],
    ) -> None:
        if before is None:
            self.event(body, "Normal", "Created", f"created {kind} {cname}")
            return
        if kind == "Deployment":
            old = (
                ((before.get("spec") or {}).get("template") or {})
                .get("metadata", {})
                .get("annotations", {})
                .get(HASH_ANNOTATION)
            )
            new = obj["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
            if old != new:
                self.event(
                    body,
                    "Normal",
                    "RollingWorkers",
                    f"config changed ({old} -> {new}): rolling Deployment {cname}",
                )
                return
        self.event(body, "Normal", "Updated", f"updated {kind} {cname} to the desired state")

    # -- status ---------------------------------------------------------------------
    def _write_status(
        self,
        body: Mapping[str, Any],
        spec: DeepAgentSpec | None,
        *,
        error: SpecError | None,
        deployment: Mapping[str, Any] | None,
        statefulset: Mapping[str, Any] | None,
        fetch: bool = False,
        keep_spec_condition: bool = False,
        config_hash_: str | None = None,
    ) -> dict[str, Any]:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        raw_spec = body.get("spec") or {}
        mode = (
            spec.streaming.redis.mode
            if spec
            else (((raw_spec.get("streaming") or {}).get("redis") or {}).get("mode") or "Disabled")
        )
        if fetch:
            deployment = deployment or self.kube.get("Deployment", ns, worker_name(name))
            if mode == "Managed":
                statefulset = statefulset or self.kube.get("StatefulSet", ns, redis_name(name))
        if spec is not None:
            desired_replicas = (
                None if spec.autoscaling else (spec.replicas if spec.replicas is not None else 1)
            )
            queue = task_queue(name, spec)
        else:
            desired_replicas, queue = raw_spec.get("replicas"), raw_spec.get("taskQueue") or name
        # The body may be an old snapshot (kopf handler, queued event): the status this
        # operator wrote last for this very object is fresher.
        key = (ns, name, meta.get("uid"))
        previous = self._written.get(key) or body.get("status") or {}
        status = compute_status(
            name=name,
            namespace=ns,
            generation=meta.get("generation"),
            redis_mode=mode,
            task_queue=queue,
            desired_replicas=desired_replicas,
            deployment=deployment,
            statefulset=statefulset,
            error=error,
            previous=previous,
            keep_spec_condition=keep_spec_condition,
            config_hash=config_hash_,
        )
        patch = merge_patch(previous, status, STATUS_KEYS)
        if patch:
            try:
                self.kube.patch_status("DeepAgent", ns, name, patch)
            except ApiError as e:
                if e.status != 404:
                    raise
                self._written.pop(key, None)
                return status
            self.metrics.inc("status_writes_total")
            self._status_events(body, previous, status)
        self._written[key] = status
        return status

    def _status_events(
        self, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        old_conds = {c.get("type"): c for c in old.get("conditions") or []}
        for cond in new.get("conditions") or []:
            prev = old_conds.get(cond["type"])
            if (
                cond["type"] == "SpecValid"
                and cond["status"] == "False"
                and (prev is None or prev.get("message") != cond["message"])
            ):
                self.event(body, "Warning", cond["reason"], cond["message"])
        if old.get("phase") != new.get("phase"):
            type_ = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
            ready = next((c for c in new["conditions"] if c["type"] == "Ready"), {})
            self.event(
                body,
                type_,
                f"Phase{new['phase']}",
                f"phase {old.get('phase') or '-'} -> {new['phase']}: {ready.get('message', '')}",
            )

    def refresh_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Recompute the status from the children after one of them changed.

        The children are read again (not taken from the watch event): a queued event can be
        older than what another reconcile already read and wrote. Refreshes that pile up
        behind the lock are coalesced: one that has not started reading yet will see the
        changes of every event that arrived before it starts.
        """
        key = (namespace, name)
        with self._locks_guard:
            if key in self._refresh_pending:
                self.metrics.inc("status_refreshes_coalesced_total")
                return None
            self._refresh_pending.add(key)
        with self._lock(namespace, name):
            with self._locks_guard:
                self._refresh_pending.discard(key)
            body = self.kube.get("DeepAgent", namespace, name)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            try:
                spec: DeepAgentSpec | None = self._parse(body)
            except SpecError:
                spec = None
            return self._write_status(
                body,
                spec,
                error=None,
                deployment=None,
                statefulset=None,
                fetch=True,
                keep_spec_condition=True,
            )

    def forget(self, namespace: str, name: str) -> None:
        """Drop in-memory state of a deleted DeepAgent."""
        with self._locks_guard:
            self._locks.pop((namespace, name), None)
        for key in [k for k in list(self._written) if k[:2] == (namespace, name)]:
            self._written.pop(key, None)

    # -- child events ---------------------------------------------------------------
    def reconcile_by_name(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.kube.get("DeepAgent", namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        try:
            return self.reconcile(body)
        except SpecError:
            return None  # already reported as a condition; kopf retries with back-off

    def on_child_event(self, kind: str, event_type: str | None, child: Mapping[str, Any]) -> str:
        """React to a watch event of a child; returns what was done (for logs and tests)."""
        meta = child.get("metadata") or {}
        agent = (meta.get("labels") or {}).get(AGENT_LABEL)
        ns, cname = meta.get("namespace"), meta.get("name")
        if not agent or not ns:
            return "ignored"
        key = (kind, ns, cname)
        gen = meta.get("generation")
        if event_type == "DELETED":
            self.seen.discard(key)
        else:
            self.seen.add(key)
        if event_type is None:  # initial listing: the resume handler reconciles
            if gen is not None:
                self.generations.setdefault(key, gen)
            return "listed"
        if event_type == "DELETED":
            self.generations.pop(key, None)
            self._child_digests.pop(key, None)
            self.metrics.inc("drift_repairs_total")
            self.reconcile_by_name(ns, agent)
            return "reconciled"
        if kind in ("Deployment", "StatefulSet"):
            known = self.generations.get(key)
            if known is not None and gen is not None and gen != known:
                # Someone else changed the spec of our child: restore it.
                self.metrics.inc("drift_checks_total")
                self.reconcile_by_name(ns, agent)
                return "reconciled"
            if gen is not None:
                self.generations[key] = gen
            digest = _status_inputs(child)
            if self._child_digests.get(key) == digest:
                return "unchanged"  # nothing the status is computed from has changed
            self._child_digests[key] = digest
            self.refresh_status(ns, agent)
            return "status"
        if kind in ("Service", "NetworkPolicy", "Secret"):
            self.metrics.inc("drift_checks_total")
            self.reconcile_by_name(ns, agent)
            return "reconciled"
        return "ignored"
