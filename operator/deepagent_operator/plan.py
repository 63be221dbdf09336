"""Pure decisions of a reconcile: the spec and the observed objects in, what to write out.

Nothing here talks to the API. :mod:`.reconcile` reads the objects, asks this module what
to create, patch or delete and what the status is, and then does exactly that. Keeping the
decisions here lets unit tests check them with plain dicts.

A child is written only when its desired manifest is not already a subset of the live
object (server defaults ignored, quantities compared by value), and the status only when
it differs: re-running with nothing changed makes zero writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from . import MANAGER
from .children import (
    HASH_ANNOTATION,
    gateway_name,
    gateway_secret_name,
    redis_name,
    redis_secret_name,
    task_queue,
    worker_name,
)
from .gateway_spec import GatewaySpec, gateway_enabled
from .model import STATUS_KEYS, DeepAgentSpec, SpecError
from .status import ProbeResult, compute_status, gateway_status

#: (kind, name) of a child in the DeepAgent's namespace
ChildKey = tuple[str, str]
#: a Kubernetes Event to post on the DeepAgent: (type, reason, message)
Event = tuple[str, str, str]


# -- comparing desired and live objects --------------------------------------------------
def quantity_equal(a: Any, b: Any) -> bool:
    """True when two resource quantities mean the same amount ("0.5" == "500m")."""
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
    if isinstance(desired, (str, int, float)) and isinstance(live, (str, int, float)):
        return quantity_equal(desired, live)
    return False


def merge_patch(
    current: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    keys: Sequence[str] | None = None,
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


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """True when ``obj`` has an ownerReference to the object with this uid."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """True when the object with this uid is ``obj``'s controller (ownerReference with
    ``controller: true``): only then may the operator change or delete ``obj``."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") is True for r in refs)


def find_conflicts(
    wanted: Sequence[ChildKey], observed: Mapping[ChildKey, Mapping[str, Any] | None], uid: str
) -> list[ChildKey]:
    """The wanted children whose name is taken by an object this DeepAgent does not control."""
    return [
        key
        for key in wanted
        if (live := observed.get(key)) is not None and not controlled_by(live, uid)
    ]


def not_owned_error(conflicts: Sequence[ChildKey]) -> SpecError:
    """The condition for children that exist but belong to someone else (never adopted,
    never overwritten, never deleted: the DeepAgent waits until the name is free)."""
    objects = " and ".join(f"{kind} {name}" for kind, name in conflicts)
    one = len(conflicts) == 1
    return SpecError(
        "metadata.name",
        f"{objects} already {'exists and is' if one else 'exist and are'} not controlled by "
        "this DeepAgent; the operator leaves "
        f"{'it' if one else 'them'} untouched and writes no children until the name is free",
        f"rename the DeepAgent (child names derive from it), or delete {objects} "
        f"if {'it is a leftover' if one else 'they are leftovers'}",
        reason="ChildNotOwned",
    )


#: What the API server says when a write changes a field that cannot change.
IMMUTABLE = ("field is immutable", "updates to statefulset spec for fields other than")


def rejection_error(kind: str, name: str, message: str) -> SpecError:
    """The condition for a child write the API server refused (HTTP 400 / 422): its own
    message, so the user sees what Kubernetes objects to."""
    if kind == "StatefulSet" and any(text in message for text in IMMUTABLE):
        return SpecError(
            "spec.streaming.redis.storage",
            f"cannot update StatefulSet {name}: {message}",
            f"delete StatefulSet {name} to recreate it (PVCs are kept)",
            reason="ImmutableField",
        )
    return SpecError(
        "spec",
        f"the API server rejected {kind} {name}: {message}",
        "fix the DeepAgent field that the message's field path comes from",
        reason="ChildRejected",
    )


# -- replicas when an HPA takes over ---------------------------------------------------------
def owns_field(obj: Mapping[str, Any], manager: str, *path: str) -> bool:
    """True when ``manager`` owns the field ``path`` of ``obj`` through server-side apply."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if entry.get("subresource"):
            continue
        node: Any = entry.get("fieldsV1") or {}
        for part in path:
            node = node.get(f"f:{part}") if isinstance(node, dict) else None
        if node is not None:
            return True
    return False


def replicas_handoff(
    spec: DeepAgentSpec, live: Mapping[str, Any] | None, manager: str
) -> int | None:
    """The replica count to hand to the HPA before the operator stops applying ``replicas``.

    With autoscaling the Deployment manifest has no ``replicas``; if the operator's apply
    owned the field, dropping it would reset the Deployment to 1 pod. So the count is first
    applied by a second field manager (at least the HPA's minReplicas, never less than now),
    which keeps it until the HPA changes it. None: nothing to hand over.
    """
    if (
        spec.autoscaling is None
        or live is None
        or not owns_field(live, manager, "spec", "replicas")
    ):
        return None
    current = (live.get("spec") or {}).get("replicas")
    current = 1 if current is None else int(current)
    return max(current, spec.autoscaling.min_replicas)


def replicas_manifest(obj: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """The partial manifest that applies only ``spec.replicas`` of ``obj``."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }


# -- children ------------------------------------------------------------------------------
def child_key(obj: Mapping[str, Any]) -> ChildKey:
    """(kind, name) of a manifest."""
    return obj["kind"], obj["metadata"]["name"]


def wanted_children(name: str, spec: DeepAgentSpec) -> list[ChildKey]:
    """Every child this spec asks for, the Redis password Secret included."""
    wanted: list[ChildKey] = []
    if spec.streaming.redis.mode == "Managed":
        wanted += [
            ("Service", redis_name(name)),
            ("StatefulSet", redis_name(name)),
            ("NetworkPolicy", redis_name(name)),
            ("Secret", redis_secret_name(name)),
        ]
    wanted.append(("Deployment", worker_name(name)))
    if spec.autoscaling is not None:
        wanted.append(("HorizontalPodAutoscaler", worker_name(name)))
    if gateway_enabled(spec):
        wanted += [("Service", gateway_name(name)), ("Deployment", gateway_name(name))]
        if spec.gateway is not None and spec.gateway.api_key_secret_ref is None:
            wanted.append(("Secret", gateway_secret_name(name)))
    return wanted


def unwanted_children(name: str, spec: DeepAgentSpec) -> list[ChildKey]:
    """Children this spec does not ask for: deleted when they exist and are this agent's."""
    unwanted: list[ChildKey] = []
    if spec.streaming.redis.mode != "Managed":
        # The auth Secret is kept on purpose: switching back to Managed reuses the password.
        unwanted += [
            ("StatefulSet", redis_name(name)),
            ("Service", redis_name(name)),
            ("NetworkPolicy", redis_name(name)),
        ]
    if spec.autoscaling is None:
        unwanted.append(("HorizontalPodAutoscaler", worker_name(name)))
    if not gateway_enabled(spec):
        # The API key Secret is kept, like Redis's: enabling the gateway again keeps the key.
        unwanted += [("Deployment", gateway_name(name)), ("Service", gateway_name(name))]
    return unwanted


@dataclasses.dataclass(frozen=True)
class ChildPlan:
    """What to write for the children of one DeepAgent."""

    #: manifests to server-side apply (missing, or drifted from the desired state)
    apply: list[dict[str, Any]]
    #: (kind, name) -> live object that already matches its manifest
    unchanged: dict[ChildKey, dict[str, Any]]
    #: unwanted children that exist and are controlled by this DeepAgent
    delete: list[ChildKey]
    #: desired children whose name is taken by an object this DeepAgent does not control
    conflicts: list[ChildKey] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when nothing needs to be written."""
        return not self.apply and not self.delete


def _drops_replicas(obj: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """A Deployment whose replicas the operator's apply owns but no longer sets (an HPA
    takes over): a change ``is_subset`` cannot see; the apply hands the count over."""
    return (
        obj.get("kind") == "Deployment"
        and "replicas" not in (obj.get("spec") or {})
        and owns_field(live, MANAGER, "spec", "replicas")
    )


def plan_children(
    desired: Sequence[dict[str, Any]],
    unwanted: Sequence[ChildKey],
    observed: Mapping[ChildKey, Mapping[str, Any] | None],
    uid: str,
) -> ChildPlan:
    """Compare desired manifests and unwanted children with the ``observed`` live objects.

    ``observed`` maps (kind, name) to the live object, None when it does not exist; an
    unwanted child that was not observed is left alone, and so is any object this DeepAgent
    does not control. While a desired child's name is taken by such an object nothing is
    applied: the workers must not be pointed at, e.g., someone else's Service.
    """
    apply: list[dict[str, Any]] = []
    unchanged: dict[ChildKey, dict[str, Any]] = {}
    conflicts = find_conflicts([child_key(o) for o in desired], observed, uid)
    for obj in desired:
        live = observed.get(child_key(obj))
        if child_key(obj) in conflicts:
            continue
        if live is not None and is_subset(obj, live) and not _drops_replicas(obj, live):
            unchanged[child_key(obj)] = dict(live)
        else:
            apply.append(obj)
    delete = [
        key
        for key in unwanted
        if (live := observed.get(key)) is not None and controlled_by(live, uid)
    ]
    if conflicts:
        apply = []
    return ChildPlan(apply=apply, unchanged=unchanged, delete=delete, conflicts=conflicts)


def write_event(
    kind: str, name: str, before: Mapping[str, Any] | None, obj: Mapping[str, Any]
) -> tuple[str, str]:
    """(reason, message) of the Normal event after applying ``obj`` over ``before``."""
    if before is None:
        return "Created", f"created {kind} {name}"
    if kind == "Deployment":
        old = (
            ((before.get("spec") or {}).get("template") or {})
            .get("metadata", {})
            .get("annotations", {})
            .get(HASH_ANNOTATION)
        )
        new = obj["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
        if old != new:
            reason = "RollingGateway" if name.endswith("-gateway") else "RollingWorkers"
            return reason, f"config changed ({old} -> {new}): rolling Deployment {name}"
    return "Updated", f"updated {kind} {name} to the desired state"


def delete_event(kind: str, name: str) -> tuple[str, str]:
    """(reason, message) of the Normal event after deleting an unwanted child."""
    return "Deleted", f"deleted {kind} {name} (no longer needed by the spec)"


# -- status --------------------------------------------------------------------------------
def status_digest(child: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields of a Deployment / StatefulSet that :func:`~.status.compute_status` reads.

    A child event that leaves them unchanged cannot change the status.
    """
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


@dataclasses.dataclass(frozen=True)
class StatusInputs:
    """What the status depends on besides the children's own status."""

    name: str
    namespace: str
    generation: int | None
    redis_mode: str
    task_queue: str | None
    #: replicas the operator asks for; None when an HPA owns the count
    desired_replicas: int | None
    #: spec.gateway when enabled
    gateway: GatewaySpec | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any], spec: DeepAgentSpec | None) -> StatusInputs:
        """From the DeepAgent; ``spec`` is None when it did not validate (raw values then)."""
        meta = body["metadata"]
        name = meta["name"]
        if spec is not None:
            mode: str = spec.streaming.redis.mode
            replicas = (
                None if spec.autoscaling else (spec.replicas if spec.replicas is not None else 1)
            )
            queue: str | None = task_queue(name, spec)
            gateway = spec.gateway
        else:
            raw = body.get("spec") or {}
            mode = ((raw.get("streaming") or {}).get("redis") or {}).get("mode") or "Disabled"
            replicas, queue = raw.get("replicas"), raw.get("taskQueue") or name
            try:
                gateway = GatewaySpec.model_validate(raw.get("gateway"))
            except ValueError:  # pydantic's ValidationError; None is not a GatewaySpec either
                gateway = None
        return cls(
            name=name,
            namespace=meta["namespace"],
            generation=meta.get("generation"),
            redis_mode=mode,
            task_queue=queue,
            desired_replicas=replicas,
            gateway=gateway if gateway is not None and gateway.enabled else None,
        )


@dataclasses.dataclass(frozen=True)
class StatusPlan:
    """The status to hold, the merge patch that gets there, and the events to post."""

    status: dict[str, Any]
    #: empty when the current status is already right
    patch: dict[str, Any]
    events: list[Event]


def status_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Event]:
    """Events for a status change: a new spec error, a phase transition."""
    events: list[Event] = []
    old_conds = {c.get("type"): c for c in old.get("conditions") or []}
    for cond in new.get("conditions") or []:
        prev = old_conds.get(cond["type"])
        if (
            cond["type"] == "SpecValid"
            and cond["status"] == "False"
            and (prev is None or prev.get("message") != cond["message"])
        ):
            events.append(("Warning", cond["reason"], cond["message"]))
    if old.get("phase") != new.get("phase"):
        type_ = "Warning" if new["phase"] in ("Failed", "Degraded") else "Normal"
        ready = next((c for c in new["conditions"] if c["type"] == "Ready"), {})
        events.append(
            (
                type_,
                f"Phase{new['phase']}",
                f"phase {old.get('phase') or '-'} -> {new['phase']}: {ready.get('message', '')}",
            )
        )
    return events


def plan_status(
    inputs: StatusInputs,
    *,
    deployment: Mapping[str, Any] | None,
    statefulset: Mapping[str, Any] | None,
    error: SpecError | None,
    previous: Mapping[str, Any],
    keep_spec_condition: bool = False,
    config_hash: str | None = None,
    now: str | None = None,
    redis_probe: ProbeResult | None = None,
    gateway: Mapping[str, Any] | None = None,
) -> StatusPlan:
    """The status from the observed children (``gateway``: its Deployment), and how to get
    there from ``previous``."""
    status = compute_status(
        name=inputs.name,
        namespace=inputs.namespace,
        generation=inputs.generation,
        redis_mode=inputs.redis_mode,
        task_queue=inputs.task_queue,
        desired_replicas=inputs.desired_replicas,
        deployment=deployment,
        statefulset=statefulset,
        error=error,
        previous=previous,
        keep_spec_condition=keep_spec_condition,
        config_hash=config_hash,
        now=now,
        redis_probe=redis_probe,
        gateway=gateway_status(inputs.name, inputs.namespace, inputs.gateway, gateway),
    )
    patch = merge_patch(previous, status, STATUS_KEYS)
    return StatusPlan(
        status=status, patch=patch, events=status_events(previous, status) if patch else []
    )
