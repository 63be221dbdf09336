"""Level-triggered reconciliation: executes the decisions of :mod:`.plan` against the API.

Every entry point (kopf create/update/resume handlers, child watch events, the periodic
resync) ends in :meth:`Reconciler.reconcile` or :meth:`Reconciler.refresh_status`, both
serialised per DeepAgent by a lock. They read what the plan needs, write what it decides
(server-side apply of drifted children, deletes, a status merge patch) and post events;
re-running with nothing changed (e.g. after an operator restart) makes zero writes.

The operator never writes an object its DeepAgent does not control (ownerReference with the
agent's uid and ``controller: true``): such a name conflict becomes ``SpecValid=False``
(``ChildNotOwned``). A child write the API server refuses becomes ``SpecValid=False`` with
the server's message, and the same manifest is not written again before its back-off ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from . import MANAGER
from .children import (
    build_children,
    check_references,
    config_hash,
    gateway_name,
    redis_name,
    redis_secret_name,
    referenced_objects,
    resolve_image,
    resolve_temporal_address,
    worker_name,
)
from .config import OperatorConfig
from .events import EventFn, post_event
from .gateway_auth import ensure_gateway
from .kube import ApiError, Kube
from .metrics import OperatorMetrics
from .model import DeepAgentSpec, SpecError, check_name, format_validation_error, parse_spec
from .plan import (
    ChildKey,
    StatusInputs,
    child_key,
    delete_event,
    find_conflicts,
    not_owned_error,
    plan_children,
    plan_status,
    rejection_error,
    replicas_handoff,
    replicas_manifest,
    unwanted_children,
    wanted_children,
    write_event,
)
from .redis_auth import (
    Probe,
    data_of,
    ensure_redis_secret,
    owned_redis_auth,
    probe_managed_redis,
    probe_redis,
)
from .state import (
    WATCHED_KINDS,
    AgentKey,
    AgentLocks,
    AgentState,
    AgentStates,
    Rejection,
)
from .watch_events import WatchEvents

log = logging.getLogger("deepagent_operator")

#: Field manager that holds the worker replica count while an HPA takes it over.
HANDOFF_MANAGER = f"{MANAGER}-replicas-handoff"
#: HTTP codes of a child write that the API server refused as invalid.
REJECTED = (400, 422)
#: ... and what it says with a 500 when a free-form field (affinity, tolerations) has the
#: wrong shape for server-side apply: as deterministic as a 422.
TYPED_PATCH_ERROR = "failed to create typed patch object"


def _digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class Reconciler(WatchEvents):
    """Reconciles DeepAgents through ``kube``; keeps what the child watch has seen."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        event: EventFn | None = None,
        metrics: OperatorMetrics | None = None,
        redis_probe: Probe | None = None,
    ):
        self.kube = kube
        self.config = config
        self._event_fn = event
        self.metrics = metrics or OperatorMetrics()
        #: (host, port, password, timeout) -> ProbeResult: the AUTH + PING of a Managed Redis
        self.probe = redis_probe or probe_redis
        self.locks = AgentLocks()
        self.agents = AgentStates()
        self._refresh_pending: set[AgentKey] = set()
        self._pending_guard = threading.Lock()
        self.metrics.tracked_agents.set_function(lambda: len(self.agents))
        self.metrics.agent_locks.set_function(lambda: len(self.locks))

    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the DeepAgent (kopf's queue in handlers, else a direct POST)."""
        if self._event_fn is not None:
            self._event_fn(body, type_, reason, message)
        else:
            post_event(self.kube, body, type_, reason, message)

    def _child_written(self, body: Mapping[str, Any]) -> Callable[[str, str], None]:
        def written(reason: str, message: str) -> None:
            self.metrics.child_writes.inc()
            self.event(body, "Normal", reason, message)

        return written

    def state_size(self) -> dict[str, int]:
        """How much per-agent state is held (zero once every agent is gone)."""
        return {
            "agents": len(self.agents),
            "locks": len(self.locks),
            "refresh_pending": len(self._refresh_pending),
        }

    # -- full reconcile -------------------------------------------------------------
    def reconcile(self, body: Mapping[str, Any], thorough: bool = False) -> dict[str, Any]:
        """Bring the children of one DeepAgent to the desired state; return its status.

        Children that should not exist are looked up only if the child watch has seen them.
        ``thorough`` (the periodic resync) re-reads what no watch covers (referenced Secrets
        and ConfigMaps, the Redis password Secret) and compares the watched children as the
        child watch last saw them: a resync with nothing changed reads no child. Before any
        write the children are read again.
        Raises :class:`SpecError` (after writing a Failed condition) on semantic errors.
        """
        meta = body["metadata"]
        with self.locks.hold((meta["namespace"], meta["name"])):
            start = time.monotonic()
            try:
                return self._reconcile_locked(body, thorough)
            finally:
                self.metrics.observe_reconcile(time.monotonic() - start)

    def _parse(self, body: Mapping[str, Any]) -> DeepAgentSpec:
        try:
            spec = parse_spec(body.get("spec"))
        except pydantic.ValidationError as exc:
            field, msg = format_validation_error(exc)
            raise SpecError(
                field,
                msg,
                f"fix {field} (see `kubectl explain deepagent.spec`)",
                reason="InvalidSpec",
            ) from None
        check_name(body["metadata"]["name"], spec)
        return spec

    def _data(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        obj = self.kube.get(kind, ns, name)
        return None if obj is None else data_of(obj)

    def _observe(
        self, ns: str, state: AgentState, keys: list[ChildKey], use_cache: bool
    ) -> tuple[dict[ChildKey, dict[str, Any] | None], bool]:
        """The live children (``use_cache``: watched kinds as the watch last saw them);
        and whether any came from that cache."""
        observed: dict[ChildKey, dict[str, Any] | None] = {}
        cached = False
        for key in keys:
            hit = state.children.get(key) if use_cache and key[0] in WATCHED_KINDS else None
            if hit is not None:
                observed[key], cached = hit.load(), True
            else:
                observed[key] = self._read_child(state, ns, key)
        return observed, cached

    def _read_child(self, state: AgentState | None, ns: str, key: ChildKey) -> Any:
        """Read a child; a watched one goes into the cache too (newest by resourceVersion),
        so a status computed from this read is not undone by a refresh from a watch event
        still queued behind it."""
        obj = self.kube.get(key[0], ns, key[1])
        if obj is not None and state is not None and key[0] in WATCHED_KINDS:
            state.see_child(key, obj)
        return obj

    def _reconcile_locked(self, body: Mapping[str, Any], thorough: bool = False) -> dict[str, Any]:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        state = self.agents.get((ns, name))
        state.reconciled_generation = meta.get("generation")
        spec: DeepAgentSpec | None = None
        redis_auth: dict[str, Any] | None = None
        try:
            spec = self._parse(body)
            resolve_image(spec, self.config)
            resolve_temporal_address(spec, self.config)
            ref_data: dict[tuple[str, str], dict[str, Any] | None] = {}
            for ref in referenced_objects(spec):
                if (ref.kind, ref.name) not in ref_data:
                    ref_data[(ref.kind, ref.name)] = self._data(ref.kind, ns, ref.name)
            check_references(spec, ref_data)
            # Every child name is checked before anything is written: an object this agent
            # does not control is never overwritten, adopted or deleted.
            wanted = wanted_children(name, spec)
            unwanted = [key for key in unwanted_children(name, spec) if key in state.seen]
            observed, cached = self._observe(ns, state, [*wanted, *unwanted], thorough)
            if cached and find_conflicts(wanted, observed, uid):
                observed, cached = self._observe(ns, state, [*wanted, *unwanted], False)
            conflicts = find_conflicts(wanted, observed, uid)
            if conflicts:
                raise not_owned_error(conflicts)
            if spec.streaming.redis.mode == "Managed":
                sname = redis_secret_name(name)
                redis_auth = ensure_redis_secret(
                    self.kube, body, observed[("Secret", sname)], self._child_written(body)
                )
                ref_data[("Secret", sname)] = redis_auth
            gw_hash = ensure_gateway(
                self.kube, body, spec, self.config, observed, ref_data, self._child_written(body)
            )
            hash_ = config_hash(spec, self.config, ref_data)
            desired = build_children(body, spec, self.config, hash_, redis_auth, gw_hash)
            plan = plan_children(desired, unwanted, observed, uid)
            if cached and (plan.apply or plan.delete):  # write only what is really live
                observed, _ = self._observe(ns, state, [*wanted, *unwanted], False)
                conflicts = find_conflicts(wanted, observed, uid)
                if conflicts:
                    raise not_owned_error(conflicts)
                plan = plan_children(desired, unwanted, observed, uid)
            live = dict(plan.unchanged)
            for obj in plan.apply:
                key = child_key(obj)
                live[key] = self._apply(body, spec, state, obj, observed[key])
        except SpecError as err:
            self.metrics.spec_errors.inc()
            self._write_status(body, spec, error=err, fetch=True, redis_auth=redis_auth)
            raise

        for kind, cname in plan.delete:
            self.kube.delete(kind, ns, cname)
            state.seen.discard((kind, cname))
            state.children.pop((kind, cname), None)
            self.metrics.child_writes.inc()
            self.event(body, "Normal", *delete_event(kind, cname))
        for obj in desired:
            key = child_key(obj)
            state.seen.add(key)
            gen = (live[key].get("metadata") or {}).get("generation")
            if gen is not None:
                state.generations[key] = gen
        return self._write_status(
            body,
            spec,
            error=None,
            deployment=live.get(("Deployment", worker_name(name))),
            statefulset=live.get(("StatefulSet", redis_name(name))),
            gateway=live.get(("Deployment", gateway_name(name))),
            config_hash_=hash_,
            redis_auth=redis_auth,
        )

    def _apply(
        self,
        body: Mapping[str, Any],
        spec: DeepAgentSpec,
        state: AgentState,
        obj: dict[str, Any],
        before: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Server-side apply one child; returns the live object.

        A manifest the API server refused is not sent again before its back-off ends (the
        stored error is raised instead); a changed manifest is sent at once.
        """
        key = child_key(obj)
        digest = _digest(obj)
        rejected = state.rejections.get(key)
        if rejected is not None and rejected.digest == digest:
            if time.monotonic() < rejected.retry_at:
                raise rejected.error
        else:
            rejected = None
        workers = key == ("Deployment", worker_name(body["metadata"]["name"]))
        handoff = replicas_handoff(spec, before, MANAGER) if workers else None
        try:
            if handoff is not None:
                # The HPA takes the replica count over: keep it where it is meanwhile.
                self.kube.apply(replicas_manifest(obj, handoff), manager=HANDOFF_MANAGER)
                self.metrics.child_writes.inc()
            new = self.kube.apply(obj)
        except ApiError as e:
            if e.status not in REJECTED and TYPED_PATCH_ERROR not in (e.message or ""):
                raise
            attempts = rejected.attempts + 1 if rejected is not None else 1
            delay = min(self.config.max_backoff_seconds, 5.0 * 2 ** min(attempts - 1, 16))
            err = rejection_error(key[0], key[1], e.message or str(e))
            state.rejections[key] = Rejection(digest, err, attempts, time.monotonic() + delay)
            raise err from None
        state.rejections.pop(key, None)
        state.see_child(key, new)
        self.metrics.child_writes.inc()
        self.event(body, "Normal", *write_event(key[0], key[1], before, obj))
        autoscaling = spec.autoscaling
        if workers and before is None and autoscaling is not None:
            # A new Deployment starts with 1 pod; the HPA's minimum applies from the start.
            if int((new.get("spec") or {}).get("replicas") or 1) < autoscaling.min_replicas:
                manifest = replicas_manifest(obj, autoscaling.min_replicas)
                new = self.kube.apply(manifest, manager=HANDOFF_MANAGER)
                self.metrics.child_writes.inc()
        return new

    # -- status ---------------------------------------------------------------------
    def _write_status(
        self,
        body: Mapping[str, Any],
        spec: DeepAgentSpec | None,
        *,
        error: SpecError | None,
        deployment: Mapping[str, Any] | None = None,
        statefulset: Mapping[str, Any] | None = None,
        gateway: Mapping[str, Any] | None = None,
        fetch: bool = False,
        keep_spec_condition: bool = False,
        config_hash_: str | None = None,
        redis_auth: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Compute the status and patch it if it changed; ``fetch`` reads missing children
        (and the auth Secret, for the Redis probe)."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta.get("uid")
        inputs = StatusInputs.of(body, spec)
        probe = None
        if fetch:
            deployment = deployment or self._child(ns, name, "Deployment", worker_name(name))
            if inputs.redis_mode == "Managed":
                statefulset = statefulset or self._child(ns, name, "StatefulSet", redis_name(name))
            if inputs.gateway is not None:
                gateway = gateway or self._child(ns, name, "Deployment", gateway_name(name))
        if inputs.redis_mode == "Managed" and statefulset is not None:
            if redis_auth is None and fetch:
                redis_auth = owned_redis_auth(self.kube, ns, name, uid)
            timeout = self.config.redis_probe_timeout
            probe = probe_managed_redis(self.probe, timeout, ns, name, statefulset, redis_auth)
        # The body may be an old snapshot (kopf handler, queued event): the status this
        # operator wrote last for this very object is fresher.
        state = self.agents.get((ns, name))
        written = state.written
        previous = written[1] if written and written[0] == uid else body.get("status") or {}
        plan = plan_status(
            inputs,
            deployment=deployment,
            statefulset=statefulset,
            error=error,
            previous=previous,
            keep_spec_condition=keep_spec_condition,
            config_hash=config_hash_,
            redis_probe=probe,
            gateway=gateway,
        )
        if plan.patch:
            try:
                self.kube.patch_status("DeepAgent", ns, name, plan.patch)
            except ApiError as e:
                if e.status != 404:
                    raise
                self.agents.drop((ns, name))  # the agent is gone
                return plan.status
            self.metrics.status_writes.inc()
            for type_, reason, message in plan.events:
                self.event(body, type_, reason, message)
        state.written = (uid, plan.status)
        return plan.status

    def _child(self, ns: str, agent: str, kind: str, name: str) -> dict[str, Any] | None:
        """A watched child as its watch (or our last write) left it, else read."""
        state = self.agents.peek((ns, agent))
        cached = state.children.get((kind, name)) if state is not None else None
        return cached.load() if cached is not None else self._read_child(state, ns, (kind, name))

    def _agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        state = self.agents.peek((namespace, name))
        body = state.fresh_body() if state is not None else None
        return body or self.kube.get("DeepAgent", namespace, name)

    def refresh_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Recompute the status from the children after one of them changed.

        The DeepAgent and its children come from the watches' cache (no read): a child as the
        newest of its watch events, our own writes and reads left it (by resourceVersion, so a
        queued event cannot undo what a status was computed from), the DeepAgent as its watch
        left it unless the last reconcile worked from a newer generation. Refreshes that pile up behind the lock are
        coalesced: one that has not started yet sees every event that arrived before it starts.
        """
        key = (namespace, name)
        with self._pending_guard:
            if key in self._refresh_pending:
                self.metrics.status_refreshes_coalesced.inc()
                return None
            self._refresh_pending.add(key)
        try:
            with self.locks.hold(key):
                with self._pending_guard:
                    self._refresh_pending.discard(key)
                body = self._agent(namespace, name)
                if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                    self.agents.drop(key)  # a late event of a deleted agent
                    return None
                try:
                    spec: DeepAgentSpec | None = self._parse(body)
                except SpecError:
                    spec = None
                return self._write_status(
                    body, spec, error=None, fetch=True, keep_spec_condition=True
                )
        finally:
            with self._pending_guard:
                self._refresh_pending.discard(key)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the in-memory state of a deleted DeepAgent, once its in-flight reconcile (if
        any) is done: the lock itself goes away when nobody holds it."""
        with self.locks.hold((namespace, name)):
            self.agents.drop((namespace, name))

    def retain(self, existing: set[AgentKey]) -> None:
        """Drop the state of every agent not in ``existing`` (the resync's listing) and not
        being reconciled: events missed while the watch was down cannot leak state."""
        for key in self.agents.keys():
            if key not in existing and not self.locks.busy(key):
                self.agents.drop(key)
