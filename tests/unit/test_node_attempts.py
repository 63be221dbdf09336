"""A node's attempts (engine/attempts.py): a worker shutdown is not a failed attempt.

Run in temporalio's ActivityEnvironment (the activity context without a server); the
integration tests in tests/integration/test_worker_shutdown.py run it for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from deepagent_temporal.engine import attempts


def _env(attempt: int = 1, shutdowns: int | None = None) -> tuple[ActivityEnvironment, list]:
    env = ActivityEnvironment()
    details = [] if shutdowns is None else [{attempts.WORKER_SHUTDOWNS: shutdowns}]
    env.info = dataclasses.replace(env.info, attempt=attempt, heartbeat_details=details)
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details)
    return env, beats


async def _cancelled(env: ActivityEnvironment, details: ActivityCancellationDetails) -> Any:
    async def node() -> str:
        await asyncio.sleep(30)
        return "done"

    async def attempt() -> str:
        return await attempts.run_attempt(node(), "model", 3)

    task = asyncio.ensure_future(env.run(attempt))
    await asyncio.sleep(0.05)
    env.cancel(cancellation_details=details)
    return await asyncio.wait_for(task, 5)


async def test_a_worker_shutdown_is_a_retryable_worker_shutdown_error_and_is_recorded():
    env, beats = _env(attempt=3, shutdowns=2)
    with pytest.raises(ApplicationError) as raised:
        await _cancelled(env, ActivityCancellationDetails(worker_shutdown=True))
    error = raised.value
    assert error.type == attempts.WORKER_SHUTDOWN_ERROR and not error.non_retryable
    assert attempts.is_worker_shutdown(error)
    assert error.next_retry_delay == attempts.RETRY_AFTER_SHUTDOWN <= timedelta(seconds=1)
    assert "'model'" in error.message and "attempt 3" in error.message
    # the count outlives the attempt: the next one reads it from the heartbeat details
    assert beats[-1] == ({attempts.WORKER_SHUTDOWNS: 3},)


async def test_other_cancellations_stay_cancellations():
    env, beats = _env()
    with pytest.raises(asyncio.CancelledError):
        await _cancelled(env, ActivityCancellationDetails(cancel_requested=True))
    assert beats == []


@pytest.mark.parametrize(
    "attempt, shutdowns, last",
    [
        (1, None, False),
        (2, None, False),
        (3, None, True),  # the third failure: maximum_attempts=3 reached
        (3, 1, False),  # one of the two earlier attempts was a shutdown
        (5, 2, True),
        (5, 3, False),
    ],
)
async def test_failures_are_counted_without_the_shutdowns(attempt, shutdowns, last):
    env, _ = _env(attempt=attempt, shutdowns=shutdowns)

    async def node() -> None:
        raise RuntimeError("the model call failed")

    async def run() -> None:
        await attempts.run_attempt(node(), "model", 3)

    with pytest.raises(Exception) as raised:
        await env.run(run)
    if last:
        assert isinstance(raised.value, ApplicationError) and raised.value.non_retryable
        assert raised.value.type == "RuntimeError"
        assert raised.value.message == "the model call failed"
    else:
        assert type(raised.value) is RuntimeError


async def test_no_limit_and_non_retryable_errors_pass_through():
    env, _ = _env(attempt=9)
    error = ApplicationError("bad input", type="ValueError", non_retryable=True)

    async def node() -> None:
        raise error

    async def run(limit: int) -> None:
        await attempts.run_attempt(node(), "tools", limit)

    for limit in (0, 3):
        with pytest.raises(ApplicationError) as raised:
            await env.run(run, limit)
        assert raised.value is error


async def test_a_completed_attempt_returns_its_result():
    env, _ = _env(attempt=2, shutdowns=1)

    async def node() -> str:
        return "ok"

    async def run() -> str:
        return await attempts.run_attempt(node(), "model", 3)

    assert await env.run(run) == "ok"


async def test_heartbeat_details_keep_the_count():
    env, _ = _env(attempt=4, shutdowns=3)
    assert env.run(attempts.heartbeat_details) == {attempts.WORKER_SHUTDOWNS: 3}
    env, _ = _env()
    assert env.run(attempts.heartbeat_details) == {attempts.WORKER_SHUTDOWNS: 0}


def test_the_temporal_retry_policy_has_no_limit_the_node_keeps_its_own():
    policy = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
    options, limit = attempts.unlimited_retries(
        {"retry_policy": policy, "heartbeat_timeout": timedelta(seconds=30)}
    )
    assert limit == 3
    assert options["retry_policy"] == dataclasses.replace(policy, maximum_attempts=0)
    assert options["heartbeat_timeout"] == timedelta(seconds=30)
    assert policy.maximum_attempts == 3, "the caller's policy is not modified"
    assert attempts.unlimited_retries({}) == ({}, 0)
    unlimited = {"retry_policy": RetryPolicy(maximum_attempts=0)}
    assert attempts.unlimited_retries(unlimited) == (unlimited, 0)
