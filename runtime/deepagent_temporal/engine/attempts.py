"""A node's attempts: an attempt cut short by a worker shutdown is not a failure.

During a rollout each old worker gets SIGTERM: it stops polling and gives its running
activities the grace period (``DEEPAGENT_SHUTDOWN_GRACE_SECONDS``, Temporal's graceful
shutdown). A node still running when the grace ends is cancelled by the SDK, and
Temporal then counts that attempt like any other: three rollouts during one long node
would exhaust a retry policy of three attempts and fail the run.

So a node activity is scheduled with **no** Temporal attempt limit
(:func:`unlimited_retries`) and carries its retry policy's ``maximum_attempts`` in its
input; the activity enforces it itself (:func:`run_attempt`):

* cancelled because its worker shuts down: heartbeat ``{"worker_shutdowns": n + 1}``
  (heartbeat details outlive the attempt) and fail with a ``WorkerShutdown``
  ApplicationError, retried at once (``next_retry_delay``) on another worker;
* failed: if this was the node's last attempt, attempts cut short by a shutdown not
  counted (``attempt - worker_shutdowns >= maximum_attempts``), fail non-retryable
  (same error type and message), which ends the retries as ``maximum_attempts`` did.

A worker that dies (SIGKILL, OOM) still counts: its attempt times out on the heartbeat
timeout and is not recorded as a shutdown. Heartbeating must keep the count
(:func:`heartbeat_details`): a heartbeat replaces the details of earlier ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.exceptions import CancelledError as TemporalCancelledError

T = TypeVar("T")

#: ApplicationError type of a node attempt cut short by its worker's shutdown
WORKER_SHUTDOWN_ERROR = "WorkerShutdown"
#: heartbeat detail: attempts of this activity so far that ended in a worker shutdown
WORKER_SHUTDOWNS = "worker_shutdowns"
#: how soon an attempt cut short by a shutdown runs again (on another worker)
RETRY_AFTER_SHUTDOWN = timedelta(milliseconds=100)


def unlimited_retries(options: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Activity options with no Temporal attempt limit, and the limit (0: none).

    Workflow side: schedule the node with the returned options and pass the limit to
    the activity (which enforces it with :func:`run_attempt`).
    """
    retry = options.get("retry_policy")
    limit = retry.maximum_attempts if isinstance(retry, RetryPolicy) else 0
    if not limit:
        return options, 0
    return {**options, "retry_policy": dataclasses.replace(retry, maximum_attempts=0)}, limit


def worker_shutdowns(info: activity.Info | None = None) -> int:
    """Attempts of the current activity so far that ended in a worker shutdown."""
    info = info or activity.info()
    for detail in info.heartbeat_details or ():
        if isinstance(detail, dict) and isinstance(detail.get(WORKER_SHUTDOWNS), int):
            return detail[WORKER_SHUTDOWNS]
    return 0


def heartbeat_details(info: activity.Info | None = None) -> dict[str, int]:
    """What every heartbeat of the activity sends, so that the count of shutdowns
    survives (``activity.heartbeat(heartbeat_details())``)."""
    return {WORKER_SHUTDOWNS: worker_shutdowns(info)}


def is_worker_shutdown(exc: BaseException) -> bool:
    """``exc`` is how :func:`run_attempt` reports an attempt cut short by a shutdown."""
    return isinstance(exc, ApplicationError) and exc.type == WORKER_SHUTDOWN_ERROR


async def run_attempt(attempt: Awaitable[T], node: str, max_attempts: int) -> T:
    """Run one attempt of a node activity (await ``attempt``), reporting a worker
    shutdown as a retryable ``WorkerShutdown`` error and enforcing ``max_attempts``
    (0: none) without counting attempts cut short by shutdowns. Call it inside the
    activity."""
    info = activity.info()
    shutdowns = worker_shutdowns(info)
    try:
        return await attempt
    except (asyncio.CancelledError, TemporalCancelledError):
        details = activity.cancellation_details()
        if details is None or not details.worker_shutdown:
            raise
        activity.heartbeat({WORKER_SHUTDOWNS: shutdowns + 1})
        raise ApplicationError(
            f"the worker shut down before node {node!r} finished (attempt {info.attempt}); "
            "it runs again on another worker",
            type=WORKER_SHUTDOWN_ERROR,
            category=ApplicationErrorCategory.BENIGN,
            next_retry_delay=RETRY_AFTER_SHUTDOWN,
        ) from None
    except Exception as exc:
        if max_attempts and info.attempt - shutdowns >= max_attempts:
            final = _non_retryable(exc)
            if final is not exc:
                raise final from exc
        raise


def _non_retryable(exc: Exception) -> ApplicationError:
    """``exc`` as an error Temporal does not retry (same type name and message)."""
    if isinstance(exc, ApplicationError):
        if exc.non_retryable:
            return exc
        return ApplicationError(
            exc.message, *exc.details, type=exc.type, non_retryable=True, category=exc.category
        )
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)
