"""What the worker pods consume besides the spec: referenced Secrets / ConfigMaps, the
operator's defaults, and the config hash over all of it (a change rolls the workers)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..config import OperatorConfig
from ..model import DeepAgentSpec, SpecError


@dataclasses.dataclass(frozen=True)
class Ref:
    """A Secret or ConfigMap the workers read; its data is part of the config hash."""

    kind: str  # "Secret" | "ConfigMap"
    name: str
    field: str  # spec path that references it, for error messages
    optional: bool = False
    keys: tuple[str, ...] = ()  # keys that must exist (empty = whole object)


def referenced_objects(spec: DeepAgentSpec) -> list[Ref]:
    """Every user Secret / ConfigMap the worker pods consume, with the field naming it."""
    refs: list[Ref] = []
    for i, src in enumerate(spec.env_from or []):
        if src.secret_ref is not None:
            refs.append(
                Ref(
                    "Secret",
                    src.secret_ref.name,
                    f"spec.envFrom[{i}].secretRef.name",
                    bool(src.secret_ref.optional),
                )
            )
        if src.config_map_ref is not None:
            refs.append(
                Ref(
                    "ConfigMap",
                    src.config_map_ref.name,
                    f"spec.envFrom[{i}].configMapRef.name",
                    bool(src.config_map_ref.optional),
                )
            )
    for i, var in enumerate(spec.env or []):
        vf = var.value_from
        if vf is None:
            continue
        if vf.secret_key_ref is not None:
            r = vf.secret_key_ref
            refs.append(
                Ref(
                    "Secret",
                    r.name,
                    f"spec.env[{i}].valueFrom.secretKeyRef",
                    bool(r.optional),
                    (r.key,),
                )
            )
        if vf.config_map_key_ref is not None:
            r2 = vf.config_map_key_ref
            refs.append(
                Ref(
                    "ConfigMap",
                    r2.name,
                    f"spec.env[{i}].valueFrom.configMapKeyRef",
                    bool(r2.optional),
                    (r2.key,),
                )
            )
    t = spec.temporal
    if t.api_key_secret_ref is not None:
        r = t.api_key_secret_ref
        refs.append(
            Ref("Secret", r.name, "spec.temporal.apiKeySecretRef", bool(r.optional), (r.key,))
        )
    if t.tls is not None:
        refs.append(
            Ref(
                "Secret",
                t.tls.secret_name,
                "spec.temporal.tls.secretName",
                False,
                ("tls.crt", "tls.key"),
            )
        )
    redis = spec.streaming.redis
    if redis.url_secret_ref is not None:
        r = redis.url_secret_ref
        refs.append(
            Ref("Secret", r.name, "spec.streaming.redis.urlSecretRef", bool(r.optional), (r.key,))
        )
    storage = spec.payload_storage
    if storage is not None and storage.credentials_secret_ref is not None:
        c = storage.credentials_secret_ref
        refs.append(
            Ref("Secret", c.name, "spec.payloadStorage.credentialsSecretRef", False, c.keys())
        )
    return refs


def check_references(spec: DeepAgentSpec, found: Mapping[tuple[str, str], Mapping | None]) -> None:
    """Raise :class:`SpecError` for a required referenced object (or key) that is missing.

    ``found`` maps (kind, name) to the object's ``data`` (None when it does not exist).
    """
    for ref in referenced_objects(spec):
        data = found.get((ref.kind, ref.name))
        if data is None:
            if ref.optional:
                continue
            raise SpecError(
                ref.field,
                f'{ref.kind} "{ref.name}" not found',
                f"create the {ref.kind} in the DeepAgent's namespace or fix {ref.field}",
                reason=f"{ref.kind}NotFound",
            )
        for key in ref.keys:
            if key not in data and not ref.optional:
                raise SpecError(
                    ref.field,
                    f'{ref.kind} "{ref.name}" has no key "{key}"',
                    f"add the key to the {ref.kind} or fix {ref.field}",
                    reason=f"{ref.kind}KeyNotFound",
                )


def resolve_image(spec: DeepAgentSpec, config: OperatorConfig) -> str:
    image = spec.image or config.default_image
    if not image:
        raise SpecError(
            "spec.image",
            "no worker image: spec.image is unset and the operator has no default runtime image",
            "set spec.image, or install the chart with --set runtimeImage.repository=... "
            "(operator flag --default-image)",
            reason="ImageNotSet",
        )
    return image


def resolve_temporal_address(spec: DeepAgentSpec, config: OperatorConfig) -> str:
    address = spec.temporal.address or config.default_temporal_address
    if not address:
        raise SpecError(
            "spec.temporal.address",
            "no Temporal address: spec.temporal.address is unset and the operator has no default",
            "set spec.temporal.address (host:port), or install the chart with "
            "--set temporal.defaultAddress=host:port",
            reason="TemporalAddressNotSet",
        )
    return address


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def config_hash(
    spec: DeepAgentSpec,
    config: OperatorConfig,
    ref_data: Mapping[tuple[str, str], Mapping | None],
) -> str:
    """Hash of everything the worker pods see: the spec, defaults, referenced data.

    Secret values are hashed, never stored; a changed Secret changes the hash and so
    the pod template annotation, which rolls the Deployment.
    """
    refs = {
        f"{kind}/{name}": (_digest(dict(data)) if data is not None else None)
        for (kind, name), data in sorted(ref_data.items())
    }
    return _digest(
        {
            # The gateway has its own hash: turning it on or scaling it never rolls workers;
            # nor does scaling the workers themselves (replicas, autoscaling).
            "spec": spec.model_copy(
                update={"gateway": None, "replicas": None, "autoscaling": None}
            ).dump(),
            "image": spec.image or config.default_image,
            "temporal": spec.temporal.address or config.default_temporal_address,
            "refs": refs,
        }
    )[:16]
