"""The gateway's API key: the generated Secret (created once) or the user's, and the hash
that rolls the gateway when either changes.

* Without ``spec.gateway.apiKeySecretRef`` the operator creates ``<name>-gateway-api-key``
  with a random key (key ``api-key``) the first time the gateway is enabled, and never
  changes it: deleting the Secret makes a new key (and rolls the gateway). Disabling the
  gateway keeps it, so enabling it again keeps the clients' key. A Secret of that name the
  DeepAgent does not control is never touched (``ChildNotOwned``).
* With ``apiKeySecretRef`` the user's Secret must exist and hold at least one key in that
  entry (an empty keys file would make the gateway serve without authentication).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from .children import (
    GATEWAY_API_KEY,
    build_gateway_secret,
    gateway_config_hash,
    gateway_secret_name,
)
from .config import OperatorConfig
from .gateway_spec import gateway_enabled
from .kube import ApiError, Kube
from .model import DeepAgentSpec, SpecError
from .plan import ChildKey, controlled_by, not_owned_error
from .redis_auth import data_of

#: (reason, message) of a write the operator made, for its metrics and events
OnWrite = Callable[[str, str], None]

FIELD = "spec.gateway.apiKeySecretRef"


def has_a_key(encoded: str | None) -> bool:
    """True when a keys-file entry (base64) holds at least one key (the gateway's format:
    one a line, blank lines and ``#`` comments skipped)."""
    try:
        text = base64.b64decode(encoded or "").decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return any(line.split("#", 1)[0].strip() for line in text.splitlines())


def _users_key(kube: Kube, ns: str, spec: DeepAgentSpec) -> tuple[str, dict[str, Any]]:
    assert spec.gateway is not None and spec.gateway.api_key_secret_ref is not None
    ref = spec.gateway.api_key_secret_ref
    live = kube.get("Secret", ns, ref.name)
    if live is None:
        raise SpecError(
            FIELD,
            f'Secret "{ref.name}" not found',
            f"create the Secret in the DeepAgent's namespace or fix {FIELD}",
            reason="SecretNotFound",
        )
    data = data_of(live)
    if not has_a_key(data.get(ref.key)):
        raise SpecError(
            FIELD,
            f'Secret "{ref.name}" has no API key under "{ref.key}"',
            f'put the key(s), one a line, in "{ref.key}" or fix {FIELD}',
            reason="SecretKeyNotFound",
        )
    return ref.name, data


def _generated_key(
    kube: Kube, body: Mapping[str, Any], live: Mapping[str, Any] | None, on_write: OnWrite
) -> tuple[str, dict[str, Any]]:
    meta = body["metadata"]
    ns, uid, sname = meta["namespace"], meta["uid"], gateway_secret_name(meta["name"])
    if live is None:
        created = kube.create(build_gateway_secret(body))
        if created is not None:
            on_write("Created", f"created Secret {sname} with a generated gateway API key")
            return sname, data_of(created)
        live = kube.get("Secret", ns, sname)  # lost a race: use what exists now
        if live is None:
            raise ApiError(409, {"message": f"Secret {sname} came and went"}, "POST", sname)
    if not controlled_by(live, uid):
        raise not_owned_error([("Secret", sname)])
    data = data_of(live)
    if not has_a_key(data.get(GATEWAY_API_KEY)):
        raise SpecError(
            "spec.gateway",
            f'Secret {sname} has no API key under "{GATEWAY_API_KEY}"',
            f"delete Secret {sname} (a new key is generated and the gateway rolls), or set "
            f"spec.gateway.apiKeySecretRef to a Secret of yours",
            reason="GatewaySecretInvalid",
        )
    return sname, data


def ensure_gateway(
    kube: Kube,
    body: Mapping[str, Any],
    spec: DeepAgentSpec,
    config: OperatorConfig,
    observed: Mapping[ChildKey, Mapping[str, Any] | None],
    ref_data: Mapping[tuple[str, str], Mapping | None],
    on_write: OnWrite,
) -> str | None:
    """The gateway's config hash (None when it is not enabled), after making sure its API
    key exists. ``observed`` holds the generated Secret as just read; ``ref_data`` is what
    the workers' hash covers."""
    if not gateway_enabled(spec):
        return None
    assert spec.gateway is not None
    if spec.gateway.api_key_secret_ref is not None:
        key = _users_key(kube, body["metadata"]["namespace"], spec)
    else:
        sname = gateway_secret_name(body["metadata"]["name"])
        key = _generated_key(kube, body, observed.get(("Secret", sname)), on_write)
    return gateway_config_hash(spec, config, ref_data, key)
