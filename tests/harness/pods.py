"""Start a process exactly as a pod would, from a rendered pod template.

The local control plane runs no containers (kwok only marks pods Ready), so end-to-end
tests read the container's command, args and env from the Deployment the operator made,
resolve Secrets and ConfigMaps the way the kubelet does, and run that command here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# $(VAR) is expanded from variables defined earlier; $$(VAR) is an escaped literal.
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' dependent-variable expansion, as the kubelet applies it to env and args."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))

    return _REFERENCE.sub(substitute, value)


LookUp = Callable[[str, str], Mapping[str, str]]
"""(kind, name) -> decoded data of a Secret ("secret") or ConfigMap ("configmap")."""


def container_env(container: Mapping[str, Any], look_up: LookUp) -> dict[str, str]:
    """The environment the kubelet would give ``container`` (envFrom first, then env)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            data = look_up("secret", source["secretRef"]["name"])
        else:
            data = look_up("configmap", source["configMapRef"]["name"])
        env.update({prefix + key: value for key, value in data.items()})
    for item in container.get("env") or []:
        ref = item.get("valueFrom")
        if ref is None:  # the API server drops an empty value: the variable is ""
            env[item["name"]] = expand(item.get("value", ""), env)
            continue
        if "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            env[item["name"]] = look_up("secret", key_ref["name"])[key_ref["key"]]
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            env[item["name"]] = look_up("configmap", key_ref["name"])[key_ref["key"]]
        else:
            raise ValueError(f"env {item['name']}: unsupported valueFrom {sorted(ref)}")
    return env


def container_argv(
    container: Mapping[str, Any],
    env: Mapping[str, str],
    image_entrypoint: list[str] | None = None,
    image_cmd: list[str] | None = None,
) -> list[str]:
    """The argv the kubelet runs: command (else the image's ENTRYPOINT) and args (else the
    image's CMD, unless command was set), with $(VAR) expanded."""
    command = container.get("command")
    args = container.get("args")
    if args is None:
        args = [] if command else (image_cmd or [])
    argv = list(command or image_entrypoint or []) + list(args)
    if not argv:
        raise ValueError(
            f"container {container.get('name')} has no command and no image entrypoint"
        )
    return [expand(arg, env) for arg in argv]


def decode_secret_data(data: Mapping[str, str] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


def mount_volumes(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], look_up: LookUp, root: Path
) -> dict[str, Path]:
    """Make the container's volume mounts local directories under ``root``, as the kubelet
    would fill them: a Secret or ConfigMap volume becomes one file per key (or per listed
    item, with its mode), anything else (emptyDir, a volumeClaimTemplate) an empty directory.
    Returns mountPath -> local directory."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        volume = volumes.get(mount["name"], {})
        source = volume.get("secret") or volume.get("configMap")
        if source is not None:
            kind = "secret" if "secret" in volume else "configmap"
            data = look_up(kind, source.get("secretName") or source["name"])
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                path = local / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data[item["key"]])
                path.chmod(item.get("mode", source.get("defaultMode", 0o644)) | 0o400)
        mounts[mount["mountPath"]] = local
    return mounts


def local_argv(argv: list[str], mounts: Mapping[str, Path]) -> list[str]:
    """``argv`` with every path under a mount point moved to the mount's local directory."""
    out = []
    for arg in argv:
        for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if arg == mount_path or arg.startswith(mount_path.rstrip("/") + "/"):
                arg = str(local) + arg[len(mount_path.rstrip("/")) :]
                break
        out.append(arg)
    return out
