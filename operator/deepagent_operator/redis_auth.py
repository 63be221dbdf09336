"""Managed Redis authentication: the password Secret, and the AUTH + PING readiness check.

* ``<name>-redis-auth`` is created once with a generated password (key ``password``, what
  the workers read) and the Redis config file that sets it (key ``redis.conf``, mounted into
  the Redis pod: the password is never in an argv). The operator never changes the password;
  deleting the Secret rotates it. It only keeps ``redis.conf`` in step with ``password``
  (Secrets of older operators have none; a user may set a password by hand), and never
  touches a Secret of that name that its DeepAgent does not control.
* A Redis that accepts TCP connections but not the workers' password (rotated, and the pod
  has not rolled yet) is not ready: the workers would fail AUTH and stream through Temporal
  only. So RedisReady needs AUTH + PING from the operator: one real connection (redis-py),
  a bounded timeout, no retries.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .children import (
    REDIS_PASSWORD_KEY,
    REDIS_PORT,
    build_redis_secret,
    redis_conf_patch,
    redis_name,
    redis_secret_name,
)
from .kube import ApiError, Kube
from .model import SpecError
from .plan import controlled_by, not_owned_error
from .status import ProbeResult

#: (host, port, password, timeout) -> ProbeResult
Probe = Callable[[str, int, str, float], ProbeResult]
#: (reason, message) of a write the operator made, for its metrics and events
OnWrite = Callable[[str, str], None]


def data_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The base64 ``data`` of a Secret (``stringData`` folded in) or a ConfigMap's data."""
    data = dict(obj.get("data") or {})
    if obj.get("kind") == "Secret":
        for k, v in (obj.get("stringData") or {}).items():
            data[k] = base64.b64encode(v.encode()).decode()
    else:
        for k, v in (obj.get("binaryData") or {}).items():
            data[k] = v
    return data


def ensure_redis_secret(
    kube: Kube, body: Mapping[str, Any], live: Mapping[str, Any] | None, on_write: OnWrite
) -> dict[str, Any]:
    """The data of ``<name>-redis-auth`` (``live``: as just read), created or brought in step
    first (see above)."""
    meta = body["metadata"]
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    sname = redis_secret_name(name)
    if live is None:
        created = kube.create(build_redis_secret(body))
        if created is not None:
            on_write("Created", f"created Secret {sname} with a generated Redis password")
            return data_of(created)
        live = kube.get("Secret", ns, sname)  # lost a race: use what exists now
        if live is None:
            raise ApiError(409, {"message": f"Secret {sname} came and went"}, "POST", sname)
    if not controlled_by(live, uid):
        raise not_owned_error([("Secret", sname)])
    data = data_of(live)
    if REDIS_PASSWORD_KEY not in data:
        raise SpecError(
            "spec.streaming.redis.mode",
            f'Secret {sname} has no key "{REDIS_PASSWORD_KEY}"',
            f"delete Secret {sname} (a new password is generated, Redis and the workers "
            f'roll), or set its key "{REDIS_PASSWORD_KEY}"',
            reason="RedisSecretInvalid",
        )
    patch = redis_conf_patch(data)
    if patch is not None:
        patch["metadata"] = {"resourceVersion": live["metadata"]["resourceVersion"]}
        kube.patch("Secret", ns, sname, patch)
        data.update(patch["data"])
        on_write("Updated", f"updated Secret {sname}: redis.conf follows the password")
    return data


def owned_redis_auth(kube: Kube, ns: str, name: str, uid: Any) -> dict[str, Any] | None:
    """The auth Secret's data when it exists and is this agent's."""
    live = kube.get("Secret", ns, redis_secret_name(name))
    if live is None or not controlled_by(live, uid):
        return None
    return data_of(live)


def probe_managed_redis(
    probe: Probe,
    timeout: float,
    ns: str,
    name: str,
    statefulset: Mapping[str, Any] | None,
    auth: Mapping[str, Any] | None,
) -> ProbeResult | None:
    """AUTH + PING of a Managed Redis whose pod is ready (None: not probed)."""
    ready = int(((statefulset or {}).get("status") or {}).get("readyReplicas") or 0)
    if ready < 1 or not auth or REDIS_PASSWORD_KEY not in auth:
        return None
    password = base64.b64decode(auth[REDIS_PASSWORD_KEY]).decode()
    return probe(f"{redis_name(name)}.{ns}.svc", REDIS_PORT, password, timeout)


def probe_redis(host: str, port: int, password: str, timeout: float) -> ProbeResult:
    """AUTH + PING against ``host:port``; never raises."""
    where = f"{host}:{port}"
    client = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
        return ProbeResult(True, "RedisReady", f"Redis at {where} answers AUTH and PING")
    except redis.AuthenticationError as exc:
        return ProbeResult(
            False,
            "RedisAuthFailed",
            f"Redis at {where} refused the password of the auth Secret ({exc}): "
            "its pod has not rolled to the current password yet",
        )
    except redis.ResponseError as exc:  # e.g. AUTH without a password configured
        return ProbeResult(False, "RedisAuthFailed", f"Redis at {where}: {exc}")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        return ProbeResult(
            False, "RedisUnreachable", f"cannot reach Redis at {where} ({exc or type(exc)})"
        )
    except redis.RedisError as exc:
        return ProbeResult(False, "RedisNotReady", f"Redis at {where}: {exc}")
    finally:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing a failed connection is best effort
            pass
