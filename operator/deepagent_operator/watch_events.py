"""What the watches tell the reconciler: the DeepAgent and its children as last seen.

A mixin of :class:`~.reconcile.Reconciler`: a child's watch event updates the cached child
and then refreshes the status (a Deployment's or StatefulSet's status changed), restores a
child someone else edited (its generation moved) or recreates a deleted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import KIND
from .children import AGENT_LABEL
from .kube import Kube
from .metrics import OperatorMetrics
from .model import SpecError
from .plan import status_digest
from .state import WATCHED_KINDS, AgentStates


class WatchEvents:
    agents: AgentStates
    kube: Kube
    metrics: OperatorMetrics

    def reconcile(self, body: Mapping[str, Any], thorough: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def refresh_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def observe_agent(self, body: Mapping[str, Any]) -> None:
        """Remember the DeepAgent as a watch event shows it (a status refresh reads it)."""
        meta = body.get("metadata") or {}
        if meta.get("name") and meta.get("namespace"):
            self.agents.get((meta["namespace"], meta["name"])).see_body(body)

    def reconcile_by_name(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.kube.get("DeepAgent", namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.agents.drop((namespace, name))  # a late event of a deleted agent
            return None
        try:
            return self.reconcile(body)
        except SpecError:
            return None  # already reported as a condition; kopf retries with back-off

    def on_child_event(self, kind: str, event_type: str | None, child: Mapping[str, Any]) -> str:
        """React to a watch event of a child; returns what was done (for logs and tests)."""
        meta = child.get("metadata") or {}
        # The agent label, or (someone removed it) the DeepAgent controlling the child.
        agent = (meta.get("labels") or {}).get(AGENT_LABEL) or next(
            (
                r.get("name")
                for r in meta.get("ownerReferences") or []
                if r.get("kind") == KIND and r.get("controller")
            ),
            None,
        )
        ns, cname = meta.get("namespace"), meta.get("name")
        if not agent or not ns:
            return "ignored"
        key = (kind, cname)
        gen = meta.get("generation")
        if event_type == "DELETED":
            state = self.agents.peek((ns, agent))
            if state is not None:
                state.forget_child(key)
            self.metrics.drift_repairs.inc()
            self.reconcile_by_name(ns, agent)
            return "reconciled"
        state = self.agents.get((ns, agent))
        state.seen.add(key)
        if kind in WATCHED_KINDS:
            state.see_child(key, child)
        if event_type is None:  # initial listing: the resume handler reconciles
            if gen is not None:
                state.generations.setdefault(key, gen)
            return "listed"
        if kind in ("Deployment", "StatefulSet"):
            known = state.generations.get(key)
            if known is not None and gen is not None and gen > known:
                # Someone else changed the spec of our child: restore it. (An older
                # generation is a queued event from before our own write.)
                self.metrics.drift_checks.inc()
                self.reconcile_by_name(ns, agent)
                return "reconciled"
            if gen is not None and (known is None or gen > known):
                state.generations[key] = gen
            digest = status_digest(child)
            if state.digests.get(key) == digest:
                return "unchanged"  # nothing the status is computed from has changed
            state.digests[key] = digest
            self.refresh_status(ns, agent)
            return "status"
        if kind in ("Service", "NetworkPolicy", "Secret"):
            self.metrics.drift_checks.inc()
            self.reconcile_by_name(ns, agent)
            return "reconciled"
        return "ignored"
