"""Level-triggered reconciliation: executes the decisions of :mod:`.plan` against the API.

Every entry point (kopf create/update/resume handlers, child watch events, the periodic
resync) ends in :meth:`Reconciler.reconcile` or :meth:`Reconciler.refresh_status`, both
serialised per DeepAgent by a lock. They read what the plan needs, write what it decides
(server-side apply of drifted children, deletes, a status merge patch) and post events;
re-running with nothing changed (e.g. after an operator restart) makes zero writes.
"""

from __future__ import annotations

import base64
import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from . import API_VERSION, KIND, MANAGER
from .children import (
    AGENT_LABEL,
    build_children,
    build_redis_secret,
    check_references,
    config_hash,
    redis_name,
    redis_secret_name,
    referenced_objects,
    resolve_image,
    resolve_temporal_address,
    worker_name,
)
from .config import OperatorConfig
from .kube import ApiError, Kube
from .metrics import OperatorMetrics
from .model import DeepAgentSpec, SpecError, format_validation_error, parse_spec
from .plan import (
    ChildKey,
    StatusInputs,
    child_key,
    delete_event,
    plan_children,
    plan_status,
    status_digest,
    unwanted_children,
    write_event,
)
from .status import now_iso

log = logging.getLogger("deepagent_operator")

EventFn = Callable[[Mapping[str, Any], str, str, str], None]


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


class Reconciler:
    """Reconciles DeepAgents through ``kube``; keeps what the child watch has seen."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        event: EventFn | None = None,
        metrics: OperatorMetrics | None = None,
    ):
        self.kube = kube
        self.config = config
        self._event_fn = event
        self.metrics = metrics or OperatorMetrics()
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
        now = now_iso()
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
                self.metrics.observe_reconcile(time.monotonic() - start)

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
            self.metrics.spec_errors.inc()
            self._write_status(body, spec, error=err, fetch=True)
            raise

        # Unwanted children are looked up only if the child watch has seen them, or always
        # on the periodic resync (``thorough``), which also catches missed events.
        unwanted = [
            key
            for key in unwanted_children(name, spec)
            if thorough or (key[0], ns, key[1]) in self.seen
        ]
        observed: dict[ChildKey, dict[str, Any] | None] = {
            key: self.kube.get(key[0], ns, key[1]) for key in [*map(child_key, desired), *unwanted]
        }
        plan = plan_children(desired, unwanted, observed, uid)
        live = dict(plan.unchanged)
        for obj in plan.apply:
            live[obj["kind"]] = self._apply(body, spec, obj, observed.get(child_key(obj)))
        for kind, cname in plan.delete:
            self.kube.delete(kind, ns, cname)
            self.seen.discard((kind, ns, cname))
            self.metrics.child_writes.inc()
            self.event(body, "Normal", *delete_event(kind, cname))
        for obj in desired:
            kind, cname = child_key(obj)
            self.seen.add((kind, ns, cname))
            gen = (live[kind].get("metadata") or {}).get("generation")
            if gen is not None:
                self.generations[(kind, ns, cname)] = gen
        return self._write_status(
            body,
            spec,
            error=None,
            deployment=live.get("Deployment"),
            statefulset=live.get("StatefulSet"),
            config_hash_=hash_,
        )

    def _apply(
        self,
        body: Mapping[str, Any],
        spec: DeepAgentSpec,
        obj: dict[str, Any],
        before: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Server-side apply one child; returns the live object."""
        kind, cname = child_key(obj)
        try:
            new = self.kube.apply(obj)
        except ApiError as e:
            if e.status == 422 and kind == "StatefulSet" and before is not None:
                err = SpecError(
                    "spec.streaming.redis.storage",
                    f"cannot update StatefulSet {cname}: {e.message}",
                    f"delete StatefulSet {cname} to recreate it (PVCs are kept)",
                    reason="ImmutableField",
                )
                self._write_status(body, spec, error=err, statefulset=before, fetch=True)
                raise err from None
            raise
        self.metrics.child_writes.inc()
        self.event(body, "Normal", *write_event(kind, cname, before, obj))
        return new

    def _ensure_redis_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``<name>-redis-auth`` with a fresh password once; never rewrite it."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        data = self._data("Secret", ns, redis_secret_name(name))
        if data is not None:
            return data
        secret = build_redis_secret(body)
        created = self.kube.create(secret)
        self.metrics.child_writes.inc()
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

    # -- status ---------------------------------------------------------------------
    def _write_status(
        self,
        body: Mapping[str, Any],
        spec: DeepAgentSpec | None,
        *,
        error: SpecError | None,
        deployment: Mapping[str, Any] | None = None,
        statefulset: Mapping[str, Any] | None = None,
        fetch: bool = False,
        keep_spec_condition: bool = False,
        config_hash_: str | None = None,
    ) -> dict[str, Any]:
        """Compute the status and patch it if it changed; ``fetch`` reads missing children."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        inputs = StatusInputs.of(body, spec)
        if fetch:
            deployment = deployment or self.kube.get("Deployment", ns, worker_name(name))
            if inputs.redis_mode == "Managed":
                statefulset = statefulset or self.kube.get("StatefulSet", ns, redis_name(name))
        # The body may be an old snapshot (kopf handler, queued event): the status this
        # operator wrote last for this very object is fresher.
        key = (ns, name, meta.get("uid"))
        previous = self._written.get(key) or body.get("status") or {}
        plan = plan_status(
            inputs,
            deployment=deployment,
            statefulset=statefulset,
            error=error,
            previous=previous,
            keep_spec_condition=keep_spec_condition,
            config_hash=config_hash_,
        )
        if plan.patch:
            try:
                self.kube.patch_status("DeepAgent", ns, name, plan.patch)
            except ApiError as e:
                if e.status != 404:
                    raise
                self._written.pop(key, None)
                return plan.status
            self.metrics.status_writes.inc()
            for type_, reason, message in plan.events:
                self.event(body, type_, reason, message)
        self._written[key] = plan.status
        return plan.status

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
                self.metrics.status_refreshes_coalesced.inc()
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
            return self._write_status(body, spec, error=None, fetch=True, keep_spec_condition=True)

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
            self.metrics.drift_repairs.inc()
            self.reconcile_by_name(ns, agent)
            return "reconciled"
        if kind in ("Deployment", "StatefulSet"):
            known = self.generations.get(key)
            if known is not None and gen is not None and gen != known:
                # Someone else changed the spec of our child: restore it.
                self.metrics.drift_checks.inc()
                self.reconcile_by_name(ns, agent)
                return "reconciled"
            if gen is not None:
                self.generations[key] = gen
            digest = status_digest(child)
            if self._child_digests.get(key) == digest:
                return "unchanged"  # nothing the status is computed from has changed
            self._child_digests[key] = digest
            self.refresh_status(ns, agent)
            return "status"
        if kind in ("Service", "NetworkPolicy", "Secret"):
            self.metrics.drift_checks.inc()
            self.reconcile_by_name(ns, agent)
            return "reconciled"
        return "ignored"
