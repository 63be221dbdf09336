"""Writing token events to Redis Streams: one pipelined writer per process, with failover.

Producers (the capture handler, the end-of-run activity) hand events to
:meth:`RedisStreamBackend.enqueue` on the event loop and are told, through the
``on_settled(count, ok)`` callback they pass, when Redis acknowledged the events or
failed to take them. That callback is the whole interface between capture and this
writer: the writer knows nothing about LLM calls, the handler nothing about pipelines.

Wire format: ``XADD key MAXLEN ~ N * e <json>`` (one event) or ``b <json list>``
(several events of one run queued together), plus a sliding ``EXPIRE`` refreshed at most
once a second per key. A failed write opens the circuit (new calls take the Temporal
path) and a background probe closes it again when Redis answers PING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deepagent_temporal import metrics
from deepagent_temporal.contract import (
    REDIS,
    STREAM_KEY_PREFIX,
    TEMPORAL,
    WorkerEnv,
    complete_event,
    dumps,
    encode_entry,
)
from deepagent_temporal.transport.circuit import CircuitBreaker
from deepagent_temporal.transport.redis_connection import RedisConnection, io_with_timeout
from deepagent_temporal.transport.redis_reader import RedisStreamReader
from deepagent_temporal.transport.replay import ReplayWindow
from deepagent_temporal.transport.temporal import TemporalPublish

logger = logging.getLogger(__name__)

#: ``on_settled(count, ok)``: ``count`` events of one producer were written (ok) or lost
OnSettled = Callable[[int, bool], None]

_TOKENS_REDIS = metrics.TOKENS_PUBLISHED.labels(transport=REDIS)


@dataclass(slots=True)
class _WriteItem:
    key: str
    data: bytes  # the event, JSON-encoded once
    is_token: bool
    on_settled: OnSettled | None


class RedisUnavailable(ConnectionError):
    """Redis could not be written (circuit open, timeout or connection error)."""


class RedisStreamBackend(RedisStreamReader):
    """The Redis path: pipelined publisher with a circuit breaker, and subscriber.

    One instance per process is enough: it multiplexes all runs through one writer task
    on the event loop that first used it (:meth:`bind_loop`).
    """

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379/0",
        *,
        maxlen: int = WorkerEnv.stream_maxlen,
        ttl_seconds: int = WorkerEnv.stream_ttl_seconds,
        key_prefix: str = STREAM_KEY_PREFIX,
        op_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        cooldown_seconds: float = 1.0,
        max_cooldown_seconds: float = 15.0,
        replay_window_seconds: float = 60.0,
        replay_max_events_per_run: int = 10_000,
        replay_max_runs: int = 256,
        replay_max_events: int = 200_000,
        max_events_per_entry: int = 256,
    ) -> None:
        super().__init__(
            redis_url,
            key_prefix=key_prefix,
            op_timeout=op_timeout,
            connect_timeout=connect_timeout,
        )
        self.maxlen = int(maxlen)
        self.ttl_seconds = int(ttl_seconds)
        self.circuit = CircuitBreaker(cooldown_seconds, max_cooldown_seconds)
        self.replay = ReplayWindow(
            window_seconds=replay_window_seconds,
            max_events_per_run=replay_max_events_per_run,
            max_runs=replay_max_runs,
            max_events=replay_max_events,
        )
        self.max_events_per_entry = max_events_per_entry
        self._conn: RedisConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expired: dict[str, float] = {}  # key -> monotonic time of the last EXPIRE
        self.expire_refresh_seconds = min(1.0, self.ttl_seconds / 10)
        self._queue: list[_WriteItem] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        self.writes = 0  # pipelines executed
        self.events_written = 0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> RedisStreamBackend | None:
        """Build from the worker environment (:class:`WorkerEnv`); None without a Redis URL."""
        worker_env = WorkerEnv.from_env(env)
        if not worker_env.redis_url:
            return None
        return cls(
            worker_env.redis_url,
            maxlen=worker_env.stream_maxlen,
            ttl_seconds=worker_env.stream_ttl_seconds,
            **kwargs,
        )

    def status(self) -> dict[str, Any]:
        """For /readyz and logs: circuit state and counters (no I/O)."""
        c = self.circuit
        return {
            "redis": "up"
            if c.state == "closed"
            else ("probing" if c.state == "half_open" else "down"),
            "circuit": c.state,
            "failures": c.failures,
            "failovers_generation": c.generation,
            "pipelines": self.writes,
            "events_written": self.events_written,
            "queued": len(self._queue),
        }

    # -- connection and writer task --------------------------------------------------

    async def _writer_conn(self) -> RedisConnection:
        conn = self._conn
        if conn is None or not conn.connected:
            conn = self._conn = await self._connect("deepagent-stream-writer")
            self._expired.clear()  # a new connection may be a new (empty) server
        return conn

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        self._expired.clear()
        if conn is not None:
            await conn.close()

    def bind_loop(self) -> None:
        """Start the writer on the running event loop (must be called on it)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # first use, or a new event loop (tests): fresh connection and writer (the
            # old writer closed its connection when its loop cancelled it)
            self._conn = None
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._writer = None
            self._probe = None
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop(), name="redis-stream-writer")

    def available(self) -> bool:
        """True if new LLM calls should use Redis (circuit closed).

        While the circuit is open a background task probes Redis (PING) every cooldown
        (exponential, capped) and closes the circuit when it answers.
        """
        if self.circuit.state == "closed":
            return True
        self._ensure_prober()
        return False

    def _ensure_prober(self) -> None:
        if self._probe is None or self._probe.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._probe = loop.create_task(self._probe_loop(), name="redis-stream-probe")

    async def _probe_loop(self) -> None:
        c = self.circuit
        while c.state != "closed":
            wait = c.opened_at + c.cooldown - c.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if c.state == "closed":
                return
            c.state = "half_open"
            conn: RedisConnection | None = None
            try:
                conn = await self._connect("deepagent-stream-probe")
                await io_with_timeout(conn.command(b"PING"), self.op_timeout)
            except asyncio.CancelledError:
                c.state = "open"
                raise
            except Exception:  # noqa: BLE001
                metrics.REDIS_ERRORS.labels(op="probe").inc()
                c.record_failure()
                continue
            finally:
                if conn is not None:
                    await conn.close()
            await self._drop_conn()  # the writer reconnects (its old connection is dead)
            c.record_success()

    # -- publishing ------------------------------------------------------------------

    def enqueue(
        self,
        workflow_id: str,
        run_id: str,
        event: dict[str, Any],
        on_settled: OnSettled | None = None,
    ) -> None:
        """Queue one event (loop thread only); ``on_settled(1, ok)`` follows its write.

        Pass the same ``on_settled`` object for a producer's consecutive events: the
        writer then settles them with one call per pipeline.
        """
        if self._writer is None or self._writer.done():
            self.bind_loop()
        data = dumps(event)
        self.replay.remember((workflow_id, run_id), self.circuit.generation, data)
        self._queue.append(
            _WriteItem(
                self.stream_key(workflow_id, run_id),
                data,
                event.get("type") == "token",
                on_settled,
            )
        )
        assert self._wakeup is not None
        self._wakeup.set()

    async def publish(
        self, workflow_id: str, run_id: str, events: Sequence[dict[str, Any]]
    ) -> None:
        """Write events and wait for Redis to acknowledge them; raises RedisUnavailable."""
        if not events:
            return
        if not self.available():
            raise RedisUnavailable("Redis circuit is open")
        self.bind_loop()
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        remaining = len(events)

        def on_settled(count: int, ok: bool) -> None:
            nonlocal remaining
            remaining -= count
            if done.done():
                return
            if not ok:
                done.set_exception(RedisUnavailable("Redis write failed"))
            elif remaining <= 0:
                done.set_result(None)

        key = self.stream_key(workflow_id, run_id)
        for ev in events:
            self._queue.append(_WriteItem(key, dumps(ev), ev.get("type") == "token", on_settled))
        assert self._wakeup is not None
        self._wakeup.set()
        await done

    async def publish_complete(
        self,
        workflow_id: str,
        run_id: str,
        *,
        temporal_publish: TemporalPublish | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Append the ``complete`` entry. Returns False if Redis could not be written.

        If Redis failed since this run's last events were written, and
        ``temporal_publish`` is given, what the run wrote before the failure is re-sent
        through it first (the client de-duplicates).
        """
        ok = True
        try:
            await self.publish(workflow_id, run_id, [complete_event(time.time(), **(extra or {}))])
        except Exception:  # noqa: BLE001
            ok = False
        if temporal_publish is not None:
            stale = self.take_replay(workflow_id, run_id, stale_only=ok)
            if stale:
                metrics.EVENTS_REPLAYED.inc(len(stale))
                await temporal_publish([{**e, "source": TEMPORAL, "replay": True} for e in stale])
        self.forget_run(workflow_id, run_id)
        return ok

    def take_replay(
        self, workflow_id: str, run_id: str, *, stale_only: bool = True
    ) -> list[dict[str, Any]]:
        """Events of a run that Redis may have lost, removed from the replay window.

        ``stale_only``: only those written before Redis last failed; else all of them.
        """
        return self.replay.take(
            (workflow_id, run_id), self.circuit.generation, stale_only=stale_only
        )

    def forget_run(self, workflow_id: str, run_id: str) -> None:
        self.replay.forget((workflow_id, run_id))

    # -- the writer task ---------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Single writer: one pipeline in flight; what queues meanwhile rides the next one.

        The writer owns the connection: it closes it when it ends (``aclose``, or its
        event loop shutting down).
        """
        assert self._wakeup is not None
        wakeup = self._wakeup
        try:
            if self.circuit.allow():
                with contextlib.suppress(Exception):  # connect early; a failure counts on write
                    await self._writer_conn()
            while True:
                if not self._queue:
                    wakeup.clear()
                    await wakeup.wait()
                items, self._queue = self._queue, []
                if not items:
                    continue
                if not self.circuit.allow():
                    self._settle(items, ok=False)
                    continue
                await self._write(items)
        finally:
            await self._drop_conn()

    async def _write(self, items: list[_WriteItem]) -> None:
        """One pipeline (XADDs and EXPIREs for ``items``), settled ok or failed."""
        try:
            conn = self._conn
            if conn is None or not conn.connected:
                conn = await self._writer_conn()
            started = time.monotonic()
            commands, expire_keys = self._commands(items, started)
            t0 = time.perf_counter()
            await io_with_timeout(conn.pipeline(commands), self.op_timeout)
        except asyncio.CancelledError:
            self._settle(items, ok=False)
            raise
        except Exception as exc:  # noqa: BLE001
            await self._write_failed(items, exc)
            return
        for key in expire_keys:
            self._expired[key] = started
        if len(self._expired) > 10000:
            self._expired.clear()
        metrics.REDIS_PUBLISH_LATENCY.observe(time.perf_counter() - t0)
        metrics.REDIS_PIPELINE_EVENTS.observe(len(items))
        self.writes += 1
        self.events_written += len(items)
        n_tokens = sum(1 for it in items if it.is_token)
        if n_tokens:
            _TOKENS_REDIS.inc(n_tokens)
        self._settle(items, ok=True)

    def _commands(
        self, items: list[_WriteItem], now: float
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """The pipeline for ``items`` and the keys it refreshes the TTL of."""
        by_key: dict[str, list[bytes]] = {}
        for it in items:
            by_key.setdefault(it.key, []).append(it.data)
        commands: list[tuple[Any, ...]] = []
        step = self.max_events_per_entry
        expire_keys = []
        for key, evs in by_key.items():
            for i in range(0, len(evs), step):
                fields = encode_entry(evs[i : i + step])
                commands.append((b"XADD", key, b"MAXLEN", b"~", self.maxlen, b"*", *fields))
            last = self._expired.get(key)
            if last is None or now - last >= self.expire_refresh_seconds:
                commands.append((b"EXPIRE", key, self.ttl_seconds))
                expire_keys.append(key)
        return commands, expire_keys

    async def _write_failed(self, items: list[_WriteItem], exc: BaseException) -> None:
        metrics.REDIS_ERRORS.labels(op="xadd").inc()
        if self.circuit.state == "closed":
            logger.warning("Redis stream write failed (%r): circuit opens", exc)
        self.circuit.record_failure()
        self._settle(items, ok=False)
        self._ensure_prober()
        await self._drop_conn()

    @staticmethod
    def _settle(items: list[_WriteItem], ok: bool) -> None:
        """Tell producers: one callback per run of consecutive items of one producer."""
        i, n = 0, len(items)
        while i < n:
            callback = items[i].on_settled
            j = i + 1
            while j < n and items[j].on_settled is callback:
                j += 1
            if callback is not None:
                try:
                    callback(j - i, ok)
                except Exception:  # noqa: BLE001 - a producer bug must not kill the writer
                    logger.exception("token stream settle callback failed")
            i = j

    async def aclose(self) -> None:
        for task in (self._writer, self._probe):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self._drop_conn()
        self._loop = None
        self._writer = None
        self._probe = None


__all__ = ["OnSettled", "RedisStreamBackend", "RedisUnavailable"]
